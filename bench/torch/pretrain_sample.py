#!/usr/bin/python3
"""PyTorch reference for bench/cases/pretrain-sample.ts: the emoji base model's architecture
(diffusers UNet2DConditionModel + CLIPTextModel, from the independent torch.nn transcriptions in
scripts/golden/models/) doing the same work as our `pretrain` and `generate`:

  pretrain_steps (n): n steps of batch B: ids [B, L] -> text encoder; x0 [B,3,32,32]; t ~ U{0..999};
      x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; MSE(unet(x_t, t, text), eps); backward; clip the
      global grad norm at 1; AdamW(lr 1e-3, wd 1e-2) step; EMA lerp of every parameter.
  sample (n): n runs of DDIM (eta 0, "leading" spacing, x0 clipped to [-1, 1]) with classifier-free
      guidance (uncond + cond in one batch of 2P) for P prompts and S steps, then to uint8 images.

Worker protocol (as bench/torch/engine.py): `serve THREADS CONFIG_JSON`, one JSON command per line
on stdin ({"op": "pretrain"|"sample"|"params", "n": N}), one JSON reply per line on stdout
({"seconds": mean seconds per call} or {"value": ...}). CONFIG_JSON holds unet (diffusers config),
text (transformers config), batch, prompts, steps, seq_len.
"""
import json
import os
import sys

from serve_loop import serve_forever  # noqa: E402 (bench/torch is the script directory)

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "golden", "models"))
import clip_text  # noqa: E402
import unet_reference  # noqa: E402


def linear_alphas_cumprod(T=1000, start=1e-4, end=0.02):
    betas = torch.linspace(start, end, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def setup(cfg):
    g = torch.Generator().manual_seed(0)
    unet = unet_reference.UNet2DConditionModel(**{k: v for k, v in cfg["unet"].items() if k in unet_reference.DEFAULTS})
    text = clip_text.CLIPTextModel(cfg["text"])
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    abar = linear_alphas_cumprod().float()
    B, L, V = cfg["batch"], cfg["seq_len"], cfg["text"]["vocab_size"]
    x0_all = torch.rand(B * 4, 3, 32, 32, generator=g) * 2 - 1

    def pretrain_step():
        idx = torch.randint(0, B * 4, (B,), generator=g)
        x0 = x0_all[idx]
        ids = torch.randint(0, V, (B, L), generator=g)
        t = torch.randint(0, 1000, (B,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = abar[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - abar[t]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + s * noise
        cond = text(ids)[0]
        loss = F.mse_loss(unet(xt, t, cond), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p, 0.005)
        return loss.item()

    P, S = cfg["prompts"], cfg["steps"]
    ids_c = torch.randint(0, V, (P, L), generator=g)
    ids_u = torch.randint(0, V, (1, L), generator=g)
    ratio = 1000 // S
    timesteps = list(range(0, S * ratio, ratio))[::-1]

    @torch.no_grad()
    def sample():
        cond = text(ids_c)[0]
        uncond = text(ids_u)[0].expand(P, -1, -1)
        ctx = torch.cat([uncond, cond], 0)
        x = torch.cat([torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(P)], 0)
        for t in timesteps:
            out = unet(torch.cat([x, x], 0), torch.full((2 * P,), t), ctx)
            u, c = out.chunk(2)
            eps = u + 3.0 * (c - u)
            prev = t - ratio
            a_t = abar[t]
            a_p = abar[prev] if prev >= 0 else abar[0]
            x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            x = a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps
        return ((x + 1) / 2).clamp(0, 1).mul(255).round().permute(0, 2, 3, 1).to(torch.uint8)

    n_params = sum(p.numel() for p in params)
    return {"pretrain": pretrain_step, "sample": sample, "params": n_params}


def serve(threads, cfg):
    torch.set_num_threads(threads)
    ops = setup(cfg)
    serve_forever(ops, {"params": lambda: ops["params"]})


if __name__ == "__main__":
    serve(int(sys.argv[2]), json.loads(sys.argv[3]))
