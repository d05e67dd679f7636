#!/usr/bin/python3
"""Golden numbers proving bench/cases/unet-step.ts's SmallUNet is the architecture of
bench/torch/unet_step.py: the parameter count, names in registration order, the output of the
first forward and the losses of three AdamW training steps, from torch.manual_seed(0)
initialisation (our setInitSeed(0) draws the same weights in the same order).

Run: /usr/bin/python3 scripts/golden/engine/unet_bench.py  → test/golden/engine/unet_bench.json
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench", "torch"))
import unet_step  # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
model = unet_step.SmallUNet()
names = [n for n, _ in model.named_parameters()]
g = torch.Generator().manual_seed(1)
x = torch.randn(16, 3, 32, 32, generator=g)
target = torch.randn(16, 3, 32, 32, generator=g)
t = torch.randint(0, 1000, (16,), generator=g)
with torch.no_grad():
    out = model(x, t)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2)
losses = []
for _ in range(3):
    opt.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(x, t), target)
    loss.backward()
    opt.step()
    losses.append(loss.item())
result = {
    "torch": torch.__version__,
    "params": sum(p.numel() for p in model.parameters()),
    "names": names,
    "outFirst": out.reshape(-1)[:64].double().tolist(),
    "outMean": out.double().mean().item(),
    "outAbsMean": out.double().abs().mean().item(),
    "losses": losses,
}
path = os.path.join(ROOT, "test", "golden", "engine", "unet_bench.json")
with open(path, "w") as f:
    json.dump(result, f)
    f.write("\n")
print("wrote", path)
