"""The converge-regime probe of docs/results/converge_probes.md (second round): one run, key=value arguments.

Sentence polarity (or ``dataset=imdb``), init = "torch", the authors' mask, [CLS] pooling, dropout 0, summed
BCE, stop at 99.5 % training accuracy; prints one JSON line (epochs, stop reason, accuracies, the last
layer's [CLS] normalised entropy, the Q/K relative move). Example::

    MIRRORATTN_CACHE=/tmp/cache python docs/results/converge_probe.py opt=lp-md:1.1 lr=3e-3 warmup=5 vocab=2000
"""
import json
import sys
import time

import torch

from mirrorattn.experiments.run_analysis import attention_sparsity
from mirrorattn.experiments.text import TextExperimentConfig, prepare_text_data
from mirrorattn.models.transformer import TextTransformer
from mirrorattn.train import TrainConfig, fit, seeded_init

a = dict(opt="lp-md:2", lr="1e-2", epochs="150", width="32", blocks="1", length="48", vocab="8000", warmup="0",
         max_train="0", dataset="polarity", heads="2", mlp="2.0", seed="0", clip="0", batch="100", init="torch")
a.update(kv.split("=", 1) for kv in sys.argv[1:])
torch.set_num_threads(1)
cfg = TextExperimentConfig(dataset=a["dataset"], data_root="/work/shared/data", max_length=int(a["length"]),
                           vocab_size=int(a["vocab"]), width=int(a["width"]), blocks=int(a["blocks"]),
                           heads=int(a["heads"]), mlp_ratio=float(a["mlp"]), dropout=0.0, pooling="cls")
prep = prepare_text_data(cfg, max_train=int(a["max_train"]) or None, progress=False)
mc = cfg.model_config(2, prep.tokenizer.get_vocab_size())
mc.init = a["init"]
mc.attention_mask = "paper"
with seeded_init(int(a["seed"])):
    model = TextTransformer(mc)
w0 = {n: p.detach().clone() for n, p in model.named_parameters() if "q_proj" in n or "k_proj" in n}
tc = TrainConfig(optimizer=a["opt"], lr=float(a["lr"]), epochs=int(a["epochs"]), batch_size=int(a["batch"]),
                 loss_reduction="sum", stop_train_acc=0.995, seed=int(a["seed"]), warmup_epochs=float(a["warmup"]),
                 grad_clip=float(a["clip"]) or None)
tag = "-".join(f"{k}{v}" for k, v in sorted(a.items()))
t = time.time()
try:
    res = fit(model, prep.data, tc, f"/tmp/converge-probe/runs/{tag}", progress=False)
except Exception as e:  # NaN etc.
    print(json.dumps({"args": a, "error": str(e)[:200], "s": round(time.time() - t)}), flush=True)
    sys.exit()
moved = {n.split(".")[-2]: round(float((p.detach() - w0[n]).norm() / w0[n].norm()), 3)
         for n, p in model.named_parameters() if n in w0}
ids, mask = prep.data.test.inputs
att = attention_sparsity(model, ids[:1000], mask[:1000], 5)
print(json.dumps({"args": a, "epochs": res["epochs_run"], "stop": res["stop_reason"],
                  "test": round(res["test_acc"], 4), "test_last": round(res["test_acc_last"], 4),
                  "val": round(res["val_acc_best"], 4),
                  "train_acc": [round(h["train_acc"], 3) for h in res["history"]][::5],
                  "s": round(time.time() - t), "moved": moved, "ent": round(att[-1]["entropy_norm"], 3),
                  "n_train": len(prep.data.train), "mean_len": prep.summary["mean_length"]}), flush=True)
