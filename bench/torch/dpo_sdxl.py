#!/usr/bin/python3
"""PyTorch reference for bench/cases/dpo-sdxl.ts: one Diffusion-DPO step of an SDXL-architecture
UNet (diffusers' layout: DownBlock2D + two CrossAttnDownBlock2D, transformer layers per block,
linear projections, the "text_time" added conditioning) at tiny widths on 32x32 latents, from
cached conditioning (text states, pooled embeddings, time ids) as a run from a training cache does:

  N pairs; prompt dropout 0.2 (the cached empty-prompt encoding); one t and one eps per PAIR,
  shared by chosen and rejected; x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, target eps;
  policy forward with autograd, reference without; inside = -beta/2 ((Lw - Ll) - (Rw - Rl)),
  loss = mean(-logsigmoid(inside)); backward; clip 1.0; AdamW (full) / AdamW on LoRA adapters.

The UNet is scripts/golden/models/unet_reference.py's transcription plus add_time_proj /
add_embedding as diffusers' UNet2DConditionModel computes them:
  emb += add_embedding(cat([text_embeds, timestep_embedding(time_ids.flatten(), D).reshape(N, -1)]))

Protocol as bench/torch/dpo.py (serve THREADS CONFIG_JSON). CONFIG_JSON: unet (diffusers config),
mode, pairs, seq_len, pooled, beta, rank, alpha, latent.
"""
import copy
import json
import os
import resource
import sys

from serve_loop import serve_forever  # noqa: E402

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "golden", "models"))
import unet_reference  # noqa: E402
from dpo import dpo_update, held_bytes, inject_lora, linear_alphas_cumprod, reference_forward_of  # noqa: E402


class SdxlUNet(unet_reference.UNet2DConditionModel):
    def __init__(self, cfg):
        super().__init__(**{k: v for k, v in cfg.items() if k in unet_reference.DEFAULTS})
        self.add_time_dim = cfg["addition_time_embed_dim"]
        temb = self.c["time_embedding_dim"] or self.c["block_out_channels"][0] * 4
        self.add_embedding = unet_reference.TimestepEmbedding(cfg["projection_class_embeddings_input_dim"], temb)

    def forward(self, sample, timesteps, ctx, text_embeds, time_ids):
        c = self.c
        n = sample.shape[0]
        t_emb = unet_reference.get_timestep_embedding(timesteps.expand(n), c["block_out_channels"][0], c["flip_sin_to_cos"], c["freq_shift"])
        emb = self.time_embedding(t_emb.to(sample.dtype))
        ids = unet_reference.get_timestep_embedding(time_ids.flatten(), self.add_time_dim, c["flip_sin_to_cos"], c["freq_shift"])
        emb = emb + self.add_embedding(torch.cat([text_embeds, ids.reshape(n, -1)], -1))
        h = self.conv_in(sample)
        res = (h,)
        for blk in self.down_blocks:
            h, states = blk(h, emb, ctx)
            res += states
        if self.mid_block is not None:
            h = self.mid_block(h, emb, ctx)
        for blk in self.up_blocks:
            mine = res[-len(blk.resnets):]
            res = res[:-len(blk.resnets)]
            h = blk(h, mine, emb, ctx, None)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


def setup(cfg):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    unet = SdxlUNet(cfg["unet"])
    n_params = sum(p.numel() for p in unet.parameters())
    if cfg["mode"] == "full":
        reference = copy.deepcopy(unet).requires_grad_(False).eval()
        lora = []
    else:
        lora = inject_lora(unet, cfg["rank"], cfg["alpha"])
        reference = None
    trainable = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2)
    abar = linear_alphas_cumprod().float()
    N, L, D, P, lat, beta = cfg["pairs"], cfg["seq_len"], cfg["unet"]["cross_attention_dim"], cfg["pooled"], cfg["latent"], cfg["beta"]
    pool = 4 * N
    chosen_all = torch.randn(pool, 4, lat, lat, generator=g)
    rejected_all = torch.randn(pool, 4, lat, lat, generator=g)
    hidden_all = torch.randn(pool, L, D, generator=g)
    pooled_all = torch.randn(pool, P, generator=g)
    hidden_empty = torch.randn(1, L, D, generator=g)
    pooled_empty = torch.randn(1, P, generator=g)
    time_ids = torch.tensor([[8.0 * lat, 8.0 * lat, 0.0, 0.0, 8.0 * lat, 8.0 * lat]])
    state = {"k": 0, "persistent": 0}

    reference_forward = reference_forward_of(unet, reference, lora)

    def step():
        k = state["k"] % 4
        state["k"] += 1
        x0 = torch.cat([chosen_all[k * N:(k + 1) * N], rejected_all[k * N:(k + 1) * N]], 0)
        hidden = hidden_all[k * N:(k + 1) * N].clone()
        pooled = pooled_all[k * N:(k + 1) * N].clone()
        noise = torch.randn(N, 4, lat, lat, generator=g)
        t = torch.randint(0, 1000, (N,), generator=g)
        drop = torch.rand(N, generator=g) < 0.2
        hidden[drop] = hidden_empty
        pooled[drop] = pooled_empty
        ctx = torch.cat([hidden, hidden], 0)
        text_embeds = torch.cat([pooled, pooled], 0)
        ids = time_ids.expand(2 * N, 6)
        noise2 = torch.cat([noise, noise], 0)
        t2 = torch.cat([t, t], 0)
        a = abar[t2].sqrt().view(-1, 1, 1, 1)
        s = (1 - abar[t2]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + s * noise2
        pred = unet(xt, t2, ctx, text_embeds, ids)
        ref = reference_forward(xt, t2, ctx, text_embeds, ids)
        loss = dpo_update(pred, ref, noise2, beta, trainable, opt)[0]
        state["persistent"] = max(state["persistent"], held_bytes(unet.parameters(), reference, opt))
        return loss

    def memory():
        return {"persistentBytes": state["persistent"], "maxRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    return {"step": step, "memory": memory, "params": n_params}


def serve(threads, cfg):
    torch.set_num_threads(threads)
    ops = setup(cfg)
    serve_forever(ops, {"params": lambda: ops["params"], "memory": ops["memory"]})


if __name__ == "__main__":
    serve(int(sys.argv[2]), json.loads(sys.argv[3]))
