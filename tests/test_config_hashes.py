"""Run hashes pinned before the experiment config nested its TrainConfig (issue 13, item 4).

The presets are read from a frozen copy (``tests/data/run_identity_presets.json``, the presets of
2026-12) so that a new preset value does not fail this test: what is pinned is the identity function
(config -> run identity -> ``config_hash``), for every run and sweep point of the text and vision
quick / converge presets and for the four synthetic quick configs. A changed hash means every finished
run on disk would be trained again.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mirrorattn.config import build_config
from mirrorattn.io import config_hash

DATA = Path(__file__).parent / "data"
PRESETS = json.loads((DATA / "run_identity_presets.json").read_text())
PINNED = json.loads((DATA / "run_identity_hashes.json").read_text())
#: (C, S, S), classes, mean, std of the vision data sets (what the loaded data would give the model config)
_IMAGES = {"digits": ((1, 8, 8), 10, (0.3,), (0.4,)), "fashion-mnist": ((1, 28, 28), 10, (0.29,), (0.35,)),
           "cifar10": ((3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))}


def _run_hashes(config, make_spec, prepared) -> dict[str, str]:
    """``{optimizer: hash, optimizer/resume: resume hash, optimizer/lr: sweep point hash}`` of a config."""
    from mirrorattn.experiments.run_folders import _resume_key

    out = {}
    for opt in config.optimizers:
        spec = make_spec(config, prepared, opt, 0, Path("unused"))
        out[opt] = config_hash(spec.identity)
        out[f"{opt}/resume"] = _resume_key(spec)[1]
        for lr in config.sweep_grid(opt):
            point = make_spec(config, prepared, opt, 0, Path("unused"), lr=lr, epochs=config.sweep_epochs,
                              analyse=False)
            out[f"{opt}/{lr:g}"] = config_hash(point.identity)
    return out


def text_hashes() -> dict[str, dict[str, str]]:
    from mirrorattn.experiments.text import TextExperimentConfig, make_spec

    out = {}
    for name, values in PRESETS["text"].items():
        config = build_config(TextExperimentConfig, values)
        tokenizer = SimpleNamespace(get_vocab_size=lambda c=config: c.vocab_size - 7)
        prepared = SimpleNamespace(data=None, tokenizer=tokenizer, num_classes=2)
        out[f"text/{name}"] = _run_hashes(config, make_spec, prepared)
    return out


def vision_hashes() -> dict[str, dict[str, str]]:
    from mirrorattn.experiments.vision import VisionExperimentConfig, make_spec

    out = {}
    for name, per_dataset in PRESETS["vision"].items():
        for dataset, values in per_dataset.items():
            if dataset not in _IMAGES:  # "folder": an image folder of the user's, no fixed data set
                continue
            config = build_config(VisionExperimentConfig, {**values, "dataset": dataset})
            shape, classes, mean, std = _IMAGES[dataset]
            ds = SimpleNamespace(image_shape=shape, num_classes=classes, mean=mean, std=std)
            out[f"vision/{name}/{dataset}"] = _run_hashes(config, make_spec, SimpleNamespace(dataset=ds, data=None))
    return out


def synthetic_hashes() -> dict[str, dict[str, str]]:
    from mirrorattn.experiments.synthetic.cli import _experiments

    return {"synthetic/quick": {name: config_hash(build_config(cls, PRESETS["synthetic"]["quick"][name]))
                                for name, (cls, _) in _experiments().items()}}


@pytest.mark.parametrize("compute", [text_hashes, vision_hashes, synthetic_hashes])
def test_run_hashes_are_unchanged(compute) -> None:
    hashes = compute()
    assert hashes == {k: PINNED[k] for k in hashes}
    assert all(len(v) >= 4 for v in hashes.values())  # every optimizer and sweep point was hashed


def _committed_runs() -> list[tuple[Path, dict, dict]]:
    """(results.json, its config and data, a run summary) of every comparison committed under docs/results."""
    root = Path(__file__).resolve().parents[1] / "docs" / "results"
    out = []
    for path in sorted(root.rglob("results.json")):
        d = json.loads(path.read_text())
        if "runs" in d and "config" in d:
            out += [(path, d, r) for runs in d["runs"].values() for r in runs]
    return out


def _config_and_prepared(d: dict) -> tuple:
    """The experiment config of a saved (flat) ``results.json`` config, its ``make_spec`` and a stand-in of the
    prepared data (what the model config reads from it)."""
    from mirrorattn.config import flat_fields
    from mirrorattn.experiments import text, vision

    data = d["data"]
    is_vision = "image_shape" in data
    cls, make_spec = ((vision.VisionExperimentConfig, vision.make_spec) if is_vision
                      else (text.TextExperimentConfig, text.make_spec))
    fields = flat_fields(cls)
    values = {k: v for k, v in d["config"].items() if k in fields}
    config = build_config(cls, {**values, "sweep_grids": values.get("sweep_grids") or {}})
    if is_vision:
        ds = SimpleNamespace(image_shape=tuple(data["image_shape"]), num_classes=len(data["class_names"]),
                             mean=tuple(data["mean"]), std=tuple(data["std"]))
        return config, make_spec, SimpleNamespace(dataset=ds, data=None)
    tokenizer = SimpleNamespace(get_vocab_size=lambda: data["vocab_size"])
    return config, make_spec, SimpleNamespace(data=None, tokenizer=tokenizer, num_classes=len(data["label_names"]))


def test_committed_runs_keep_their_hashes() -> None:
    """Every run of the comparisons committed under docs/results (trained from 2026-12-02 on, by the code of
    their day) has the hash that today's identity function gives its saved config: those runs are reused, not
    trained again."""
    runs = _committed_runs()
    assert len(runs) >= 40
    built: dict[Path, tuple] = {}
    for path, d, r in runs:
        config, make_spec, prepared = built.setdefault(path, _config_and_prepared(d))
        spec = make_spec(config, prepared, r["optimizer"], r["seed"], Path("unused"))
        assert config_hash(spec.identity) == r["config_hash"], (path, r["optimizer"], r["seed"])


if __name__ == "__main__":  # writes the pinned file (once, before the change it guards)
    every = {**text_hashes(), **vision_hashes(), **synthetic_hashes()}
    (DATA / "run_identity_hashes.json").write_text(json.dumps(every, indent=1, sort_keys=True) + "\n")
