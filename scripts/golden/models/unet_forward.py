"""Writes test/golden/models/unet_forward.json: outputs of the reference UNet (unet_reference.py)
with deterministic weights (fill_deterministic: sorted names, randn seeded 1000 + index) on
seeded inputs, plus gradients of mean(out²) for a few parameters, and timestep embeddings.
Run: /usr/bin/python3 scripts/golden/models/unet_forward.py
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import unet_reference as ref  # noqa: E402
from unet_configs import NO_MID, TINY, VARIANT, model_kwargs  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
torch.set_num_threads(1)

GRAD_PARAMS = {
    "tiny": ["conv_in.weight", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
             "mid_block.attentions.0.proj_out.bias", "up_blocks.2.resnets.1.conv1.weight", "time_embedding.linear_1.bias"],
    "variant": ["conv_in.weight", "down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_k.weight",
                "up_blocks.0.attentions.1.proj_in.weight", "mid_block.resnets.1.conv2.bias"],
    "no_mid": ["conv_in.weight", "up_blocks.0.resnets.0.conv1.weight",
               "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"],
}


def run(name, cfg, size, ctx_len):
    model = ref.UNet2DConditionModel(**model_kwargs(cfg))
    ref.fill_deterministic(model)
    x = torch.randn((2, cfg["in_channels"], size[0], size[1]), generator=torch.Generator().manual_seed(7))
    cross = cfg["cross_attention_dim"]
    ctx = torch.randn((2, ctx_len, cross), generator=torch.Generator().manual_seed(8))
    t = torch.tensor([3, 781], dtype=torch.int64)
    y = model(x, t, ctx)
    (y ** 2).mean().backward()
    params = dict(model.named_parameters())
    flat = y.detach().flatten()
    stride = max(1, flat.numel() // 64)
    return {
        "config": cfg, "input_shape": list(x.shape), "context_shape": list(ctx.shape), "timesteps": t.tolist(),
        "output_shape": list(y.shape),
        "corner": y[0, 0, :3, :3].detach().flatten().tolist(),
        "tail": y[1, -1, -3:, -3:].detach().flatten().tolist(),
        "stride": stride, "strided": flat[::stride].tolist(),
        "sum": float(y.detach().double().sum()), "abs_mean": float(y.detach().double().abs().mean()),
        "grads": {p: {"sum": float(params[p].grad.double().sum()), "abs_sum": float(params[p].grad.double().abs().sum()),
                      "first": params[p].grad.flatten()[:4].tolist()} for p in GRAD_PARAMS[name]},
    }


out = {
    "tiny": run("tiny", TINY, (32, 32), 6),
    "variant": run("variant", VARIANT, (10, 14), 5),
    "no_mid": run("no_mid", NO_MID, (16, 16), 4),
    "timestep_embedding": {
        "timesteps": [0, 1, 17, 500, 999],
        "flip_shift0_dim32": ref.get_timestep_embedding(torch.tensor([0, 1, 17, 500, 999]), 32, True, 0).flatten().tolist(),
        "noflip_shift1_dim15": ref.get_timestep_embedding(torch.tensor([0, 1, 17, 500, 999]), 15, False, 1).flatten().tolist(),
    },
}
path = os.path.join(ROOT, "test", "golden", "models", "unet_forward.json")
with open(path, "w") as f:
    json.dump(out, f)
print("wrote", path, {k: (v.get("sum"), v.get("abs_mean")) for k, v in out.items() if k != "timestep_embedding"})
