#!/usr/bin/python3
"""PyTorch reference for bench/cases/dpo.ts: one Diffusion-DPO training step on the default base
model's architecture (diffusers UNet2DConditionModel + CLIPTextModel from the independent torch.nn
transcriptions in scripts/golden/models/), as the official train.py computes it:

  N pairs: prompt ids -> frozen text encoder (no grad), prompt dropout 0.2 (empty caption);
  one t ~ U{0..999} and one eps per PAIR, shared by chosen and rejected; batch [chosen..., rejected...];
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; target v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0
  (the emoji model predicts v); per-sample MSE averaged over C, H, W for the policy (with autograd)
  and the frozen reference (torch.no_grad); inside = -beta/2 ((Lw - Ll) - (Rw - Rl)),
  loss = mean(-logsigmoid(inside)); backward; clip the global grad norm at 1; AdamW(0.9, 0.999,
  wd 1e-2) step; the logged metrics read back as Python floats.

mode "full": every UNet weight trains; the reference is a deep copy (requires_grad False).
mode "lora": LoRA (rank r, alpha) on to_q, to_k, to_v, to_out.0 (peft/diffusers' targets), base
frozen; the reference is the same network with the adapters switched off (no second copy).

Worker protocol: `serve THREADS CONFIG_JSON`, one JSON command per line on stdin
({"op": "params" | "step" | "memory" | "quit", "n": N}), one JSON reply per line on stdout
({"seconds": mean seconds per step}, {"value": ...}). CONFIG_JSON: unet (diffusers config),
text (transformers config), mode, pairs, seq_len, beta, rank, alpha.
"""
import copy
import json
import os
import resource
import sys

from serve_loop import serve_forever  # noqa: E402 (bench/torch is the script directory)

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "golden", "models"))
import clip_text  # noqa: E402
import unet_reference  # noqa: E402


class LoraLinear(nn.Module):
    """y = W x + b + (alpha / r) B A x; A kaiming-uniform, B zeros (peft's default init)."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.scale = alpha / r
        self.enabled = True

    def forward(self, x):
        y = self.base(x)
        if not self.enabled:
            return y
        return y + self.lora_B(self.lora_A(x)) * self.scale


def inject_lora(model, r, alpha):
    model.requires_grad_(False)
    layers = []
    for module in list(model.modules()):
        for name in ("to_q", "to_k", "to_v"):
            base = getattr(module, name, None)
            if isinstance(base, nn.Linear):
                layer = LoraLinear(base, r, alpha)
                setattr(module, name, layer)
                layers.append(layer)
        out = getattr(module, "to_out", None)
        if isinstance(out, nn.ModuleList) and isinstance(out[0], nn.Linear):
            layer = LoraLinear(out[0], r, alpha)
            out[0] = layer
            layers.append(layer)
    return layers


def reference_forward_of(policy, reference, lora):
    """The frozen reference's prediction without autograd: `reference` (a deep copy, full
    fine-tuning) or, when it is None, the policy with its LoRA adapters switched off for the call."""
    def reference_forward(*args):
        with torch.no_grad():
            if reference is not None:
                return reference(*args)
            for layer in lora:
                layer.enabled = False
            try:
                return policy(*args)
            finally:
                for layer in lora:
                    layer.enabled = True
    return reference_forward


def dpo_update(pred, ref, target, beta, trainable, opt):
    """The Diffusion-DPO loss of a [chosen..., rejected...] batch (per-sample MSE over C, H, W;
    inside = -beta/2 ((Lw - Ll) - (Rw - Rl)); mean -logsigmoid), backward, global grad-norm clip at
    1, optimizer step; returns the logged metrics read back as floats: loss, implicit accuracy,
    policy MSE, reference MSE, margin, grad norm."""
    lw, ll = (pred - target).pow(2).mean(dim=[1, 2, 3]).chunk(2)
    rw, rl = (ref - target).pow(2).mean(dim=[1, 2, 3]).chunk(2)
    margin = (lw - ll) - (rw - rl)
    inside = -0.5 * beta * margin
    loss = -F.logsigmoid(inside).mean()
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return [loss.item(), (inside > 0).float().mean().item(), (0.5 * (lw + ll)).mean().item(),
            (0.5 * (rw + rl)).mean().item(), margin.mean().item(), gnorm.item()]


def linear_alphas_cumprod(T=1000, start=1e-4, end=0.02):
    betas = torch.linspace(start, end, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def held_bytes(tensors, reference, opt):
    """Bytes alive between steps: the given tensors (weights, data), the frozen reference copy's
    parameters when there is one, and the optimizer's state tensors."""
    held = list(tensors) + (list(reference.parameters()) if reference is not None else [])
    held += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim() > 0]
    return tensor_bytes(held)


def setup(cfg):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    unet = unet_reference.UNet2DConditionModel(**{k: v for k, v in cfg["unet"].items() if k in unet_reference.DEFAULTS})
    text = clip_text.CLIPTextModel(cfg["text"])
    text.requires_grad_(False).eval()
    n_params = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in text.parameters())
    mode = cfg["mode"]
    if mode == "full":
        reference = copy.deepcopy(unet).requires_grad_(False).eval()
        lora = []
    else:
        lora = inject_lora(unet, cfg["rank"], cfg["alpha"])
        reference = None
    trainable = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2)
    abar = linear_alphas_cumprod().float()
    N, L, V, beta = cfg["pairs"], cfg["seq_len"], cfg["text"]["vocab_size"], cfg["beta"]
    pool = 4 * N
    chosen_all = torch.rand(pool, 3, 32, 32, generator=g) * 2 - 1
    rejected_all = torch.rand(pool, 3, 32, 32, generator=g) * 2 - 1
    ids_all = torch.randint(0, V, (pool, L), generator=g)
    ids_empty = torch.randint(0, V, (1, L), generator=g)
    state = {"k": 0, "persistent": 0}

    reference_forward = reference_forward_of(unet, reference, lora)

    def step():
        k = state["k"] % 4
        state["k"] += 1
        x0 = torch.cat([chosen_all[k * N:(k + 1) * N], rejected_all[k * N:(k + 1) * N]], 0)
        ids = ids_all[k * N:(k + 1) * N].clone()
        noise = torch.randn(N, 3, 32, 32, generator=g)
        t = torch.randint(0, 1000, (N,), generator=g)
        drop = torch.rand(N, generator=g) < 0.2
        ids[drop] = ids_empty
        with torch.no_grad():
            cond = text(ids)[0]
        ctx = torch.cat([cond, cond], 0)
        noise2 = torch.cat([noise, noise], 0)
        t2 = torch.cat([t, t], 0)
        a = abar[t2].sqrt().view(-1, 1, 1, 1)
        s = (1 - abar[t2]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + s * noise2
        target = a * noise2 - s * x0
        pred = unet(xt, t2, ctx)
        ref = reference_forward(xt, t2, ctx)
        metrics = dpo_update(pred, ref, target, beta, trainable, opt)
        # what stays alive between steps: weights, the reference, the optimizer state, the data pool
        # (ours counts its live tensors, its data pool among them)
        pool = [chosen_all, rejected_all, ids_all, ids_empty]
        state["persistent"] = max(state["persistent"], held_bytes([*unet.parameters(), *text.parameters(), *pool], reference, opt))
        return metrics

    def memory():
        return {"persistentBytes": state["persistent"], "maxRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "trainable": sum(p.numel() for p in trainable)}

    def profile():
        # torch's autograd profiler over 4 steps: self CPU time and calls per op, as ours reports them
        with torch.autograd.profiler.profile() as prof:
            for _ in range(4):
                step()
        return {e.key: {"calls": e.count, "selfUs": e.self_cpu_time_total} for e in prof.key_averages()}

    return {"step": step, "memory": memory, "params": n_params, "profile": profile}


def serve(threads, cfg):
    torch.set_num_threads(threads)
    ops = setup(cfg)
    serve_forever(ops, {"params": lambda: ops["params"], "memory": ops["memory"], "profile": ops["profile"]})


if __name__ == "__main__":
    serve(int(sys.argv[2]), json.loads(sys.argv[3]))
