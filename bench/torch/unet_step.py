#!/usr/bin/python3
"""PyTorch reference for bench/cases/unet-step.ts: the same small UNet (channels 32/64/128,
GroupNorm(8), SiLU, sinusoidal time embedding, self-attention at 8x8; 1,131,683 parameters), one
training step = forward on a [16, 3, 32, 32] batch, MSE to a target, backward, AdamW step.

Layout: conv_in 3->32 | Res(32,32) down | Res(32,64) down | Res(64,128)+attn (8x8) |
mid Res(128,128)+attn | up, conv 128->64 | Res(64+64 skip, 64) | up, conv 64->64 |
Res(64+32 skip, 32) | GroupNorm, SiLU, conv_out 32->3.

Standalone: /usr/bin/python3 bench/torch/unet_step.py THREADS WARMUP REPS
prints one JSON object {"params": N, "seconds": [...], "median": s, "forwardMedian": s}; the bench
itself drives make_step() through bench/torch/engine.py's worker, alternating with ours.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CH = (32, 64, 128)
TEMB = 128
GROUPS = 8


class ResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(TEMB, cout)
        self.norm2 = nn.GroupNorm(GROUPS, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions (diffusers' AttnBlock layout)."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(GROUPS, c)
        self.q = nn.Linear(c, c)
        self.k = nn.Linear(c, c)
        self.v = nn.Linear(c, c)
        self.out = nn.Linear(c, c)

    def forward(self, x):
        n, c, h, w = x.shape
        t = self.norm(x).reshape(n, c, h * w).transpose(1, 2)
        q, k, v = self.q(t), self.k(t), self.v(t)
        scores = (q * (1 / math.sqrt(c))) @ k.transpose(-2, -1)
        a = torch.softmax(scores, -1) @ v
        return x + self.out(a).transpose(1, 2).reshape(n, c, h, w)


def timestep_embedding(t, dim=32):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], -1)


class SmallUNet(nn.Module):
    def __init__(self):
        super().__init__()
        c0, c1, c2 = CH
        self.time1 = nn.Linear(32, TEMB)
        self.time2 = nn.Linear(TEMB, TEMB)
        self.conv_in = nn.Conv2d(3, c0, 3, padding=1)
        self.down0 = ResBlock(c0, c0)
        self.downsample0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down1 = ResBlock(c0, c1)
        self.downsample1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.down2 = ResBlock(c1, c2)
        self.down2_attn = Attention(c2)
        self.mid = ResBlock(c2, c2)
        self.mid_attn = Attention(c2)
        self.upsample2 = nn.Conv2d(c2, c1, 3, padding=1)
        self.up1 = ResBlock(c1 + c1, c1)
        self.upsample1 = nn.Conv2d(c1, c1, 3, padding=1)
        self.up0 = ResBlock(c1 + c0, c0)
        self.norm_out = nn.GroupNorm(GROUPS, c0)
        self.conv_out = nn.Conv2d(c0, 3, 3, padding=1)

    def forward(self, x, t):
        temb = self.time2(F.silu(self.time1(timestep_embedding(t))))
        h = self.conv_in(x)
        s0 = self.down0(h, temb)
        h = self.downsample0(s0)
        s1 = self.down1(h, temb)
        h = self.downsample1(s1)
        s2 = self.down2_attn(self.down2(h, temb))
        h = self.mid_attn(self.mid(s2, temb))
        h = self.upsample2(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.up1(torch.cat([h, s1], 1), temb)
        h = self.upsample1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.up0(torch.cat([h, s0], 1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def make_step():
    """The model, AdamW and fixed batch; returns the step and no-grad forward callables."""
    torch.manual_seed(0)
    model = SmallUNet()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 32, 32, generator=g)
    target = torch.randn(16, 3, 32, 32, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x, t), target)
        loss.backward()
        opt.step()
        return loss.item()

    def forward():
        with torch.no_grad():
            model(x, t)

    return {"step": step, "forward": forward, "params": params}


def main():
    threads, warmup, reps = (int(a) for a in sys.argv[1:4])
    torch.set_num_threads(threads)
    s = make_step()
    seconds = []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        s["step"]()
        if i >= warmup:
            seconds.append(time.perf_counter() - t0)
    fwd = []
    for i in range(1 + reps):
        t0 = time.perf_counter()
        s["forward"]()
        if i >= 1:
            fwd.append(time.perf_counter() - t0)
    med = lambda v: sorted(v)[len(v) // 2]
    print(json.dumps({"params": s["params"], "seconds": seconds, "median": med(seconds), "forwardMedian": med(fwd),
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
