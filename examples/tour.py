"""The README's tour of the Python API, as a script that runs (``python examples/tour.py``)."""

import numpy as np
import torch

from mirrorattn import directional_bregman
from mirrorattn.data.synthetic import make_synthetic
from mirrorattn.models.attention import OneLayerAttention
from mirrorattn.optim import LpMirrorDescent, build_optimizer
from mirrorattn.svm import attention_svm
from mirrorattn.tokens import is_locally_optimal, selected_tokens, token_scores

# 1. The optimizer in your own training loop: any model, any loss.
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
opt = LpMirrorDescent(model.parameters(), lr=0.1, p=1.1)  # or build_optimizer("lp-md:1.1", ..., lr=0.1)
x = torch.randn(256, 20)
y = (x[:, 0] + x[:, 1] > 0).float()  # a learnable target
for _ in range(200):
    opt.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)
    loss.backward()
    opt.step()
print(f"1. final training loss with l_1.1 mirror descent: {loss.item():.3f}")
adam = build_optimizer("adam", model.parameters(), lr=1e-3)  # the same registry names the baselines

# 2. Train the one-layer attention model f(X, z) = v^T X^T softmax(X W z) with normalised l_p-MD.
p = 1.75
data = make_synthetic(n=6, T=8, d=10, seed=0)  # X (n, T, d), z (n, d), y (n,), v (d,)
X, z, yy = (torch.from_numpy(a)[None] for a in (data.X, data.z, data.y))  # leading seed axis of 1
att = OneLayerAttention(d=10)
att.v.copy_(torch.from_numpy(data.v)[None])
opt = LpMirrorDescent(att.parameters(), lr=0.1, p=p, normalized=True)
for _ in range(1500):
    opt.zero_grad()
    att.loss(X, z, yy).sum().backward()
    opt.step()
W = att.W.detach()[0].numpy()

# 3. Solve the l_p-AttSVM for the tokens the model selects and compare directions.
alpha = selected_tokens(data.X, data.z, W)  # argmax of the softmax, per sample
svm = attention_svm(data.X, data.z, alpha, p)
print(f"2. selected tokens {alpha.tolist()}, ||W_mm||_p = {svm.objective:.3f} ({svm.status})")
print(f"   support tokens per sample: {svm.support.sum(axis=1).tolist()}")
print(f"   directional Bregman divergence D(W_mm, W_k): {directional_bregman(svm.W, W, p):.2e}")
gamma = token_scores(data.X, data.y, data.v)
print(f"   alpha locally optimal: {is_locally_optimal(alpha, svm, gamma)}; "
      f"globally: {bool(np.all(alpha == gamma.argmax(axis=1)))}")
