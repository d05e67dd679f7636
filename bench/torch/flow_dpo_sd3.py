#!/usr/bin/python3
"""PyTorch reference for bench/cases/flow-dpo.ts: one Flow-DPO step of a tiny SD3 transformer
(diffusers' SD3Transformer2DModel layout, written out here in plain torch.nn since the machine has
no diffusers), from cached conditioning (the packed text states + pooled embedding):

  N pairs; prompt dropout 0.2 (the cached empty-prompt encoding); per PAIR one sigma and one eps,
  shared by chosen and rejected: u = sigmoid(N(0, 1)) (logit-normal, train_dreambooth_sd3's
  default), index = int(u * 1000) into the shift-3 training table (sigma = s / (1 + 2 s),
  s = linspace(1, 1/1000, 1000)), t = sigma * 1000; x_t = (1 - sigma) x0 + sigma eps, target
  eps - x0; per-sample MSE for the policy (with autograd) and the reference (no grad);
  inside = -beta/2 ((Lw - Ll) - (Rw - Rl)), loss = mean(-logsigmoid(inside)); backward; clip 1.0;
  AdamW(0.9, 0.999, wd 1e-2).

The transformer: PatchEmbed (conv p x p + the centre crop of a sin-cos table of pos_embed_max_size),
context_embedder, time_text_embed (Timesteps(256, flip, shift 0) -> MLP, + pooled MLP), joint
blocks (AdaLayerNormZero for both streams, the last block's context AdaLayerNormContinuous and no
context output), joint attention over [image; context] tokens, tanh-GELU feed-forwards (x4),
norm_out (AdaLayerNormContinuous: scale then shift), proj_out, unpatchify.

mode "full": the reference is a deep copy; mode "lora": LoRA r on diffusers' SD3 targets (attn
to_q/k/v/to_out.0, add_q/k/v_proj, to_add_out, ff(.context).net.0.proj / net.2), the reference is
the same network with the adapters off.

`check CASE_DIR` runs the transformer with the weights and inputs of the shared reference case
sd3-transformer (saved by the real diffusers 0.30) and compares with its transformer_out:
measured max|ours - ref| / max|ref| = 1.6e-7 (strict state-dict load, 78,672 parameters), bound 1e-4.

Protocol as bench/torch/dpo.py (serve THREADS CONFIG_JSON). CONFIG_JSON: transformer (diffusers
config keys), mode, pairs, seq_len, beta, rank, alpha, latent.
"""
import copy
import json
import math
import os
import resource
import sys

from serve_loop import serve_forever  # noqa: E402

import torch
import torch.nn as nn
import torch.nn.functional as F

from dpo import LoraLinear, held_bytes, reference_forward_of  # noqa: E402


def layer_norm(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class AdaZero(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, x, emb):
        sm, cm, gm, sf, cf, gf = self.linear(F.silu(emb)).chunk(6, 1)
        return layer_norm(x) * (1 + cm[:, None]) + sm[:, None], gm, sf, cf, gf


class AdaContinuous(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)

    def forward(self, x, emb):
        scale, shift = self.linear(F.silu(emb)).chunk(2, 1)
        return layer_norm(x) * (1 + scale[:, None]) + shift[:, None]


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([nn.Module(), nn.Identity(), nn.Linear(4 * dim, dim)])
        self.net[0].proj = nn.Linear(dim, 4 * dim)

    def forward(self, x):
        return self.net[2](F.gelu(self.net[0].proj(x), approximate="tanh"))


class JointAttention(nn.Module):
    def __init__(self, dim, heads, head_dim, context_pre_only):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.add_q_proj, self.add_k_proj, self.add_v_proj = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])
        self.to_add_out = None if context_pre_only else nn.Linear(inner, dim)

    def split(self, t):
        n, l, _ = t.shape
        return t.view(n, l, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, c):
        q = torch.cat([self.split(self.to_q(x)), self.split(self.add_q_proj(c))], 2)
        k = torch.cat([self.split(self.to_k(x)), self.split(self.add_k_proj(c))], 2)
        v = torch.cat([self.split(self.to_v(x)), self.split(self.add_v_proj(c))], 2)
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), -1)
        out = (w @ v).transpose(1, 2).reshape(x.shape[0], -1, self.heads * self.head_dim)
        ox, oc = out[:, : x.shape[1]], out[:, x.shape[1]:]
        return self.to_out[0](ox), (self.to_add_out(oc) if self.to_add_out is not None else None)


class JointBlock(nn.Module):
    def __init__(self, dim, heads, head_dim, context_pre_only):
        super().__init__()
        self.context_pre_only = context_pre_only
        self.norm1 = AdaZero(dim)
        self.norm1_context = AdaContinuous(dim) if context_pre_only else AdaZero(dim)
        self.attn = JointAttention(dim, heads, head_dim, context_pre_only)
        self.ff = FeedForward(dim)
        self.ff_context = None if context_pre_only else FeedForward(dim)

    def forward(self, x, c, temb):
        nx, gm, sf, cf, gf = self.norm1(x, temb)
        if self.context_pre_only:
            nc = self.norm1_context(c, temb)
        else:
            nc, cgm, csf, ccf, cgf = self.norm1_context(c, temb)
        ax, ac = self.attn(nx, nc)
        x = x + gm[:, None] * ax
        x = x + gf[:, None] * self.ff(layer_norm(x) * (1 + cf[:, None]) + sf[:, None])
        if self.context_pre_only:
            return x, None
        c = c + cgm[:, None] * ac
        c = c + cgf[:, None] * self.ff_context(layer_norm(c) * (1 + ccf[:, None]) + csf[:, None])
        return x, c


def sincos_2d(dim, grid, base):
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64) / (grid / base)
    ww = (pos[None, :, None] * omega).expand(grid, grid, quarter)
    hh = (pos[:, None, None] * omega).expand(grid, grid, quarter)
    return torch.cat([ww.sin(), ww.cos(), hh.sin(), hh.cos()], -1).reshape(1, grid * grid, dim).float()


def timestep_proj(t, dim=256):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], -1)  # flip_sin_to_cos=True


def mlp(i, o):
    m = nn.Module()
    m.linear_1, m.linear_2 = nn.Linear(i, o), nn.Linear(o, o)
    return m


class SD3Transformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        dim = c["num_attention_heads"] * c["attention_head_dim"]
        p = c["patch_size"]
        self.pos_embed = nn.Module()
        self.pos_embed.proj = nn.Conv2d(c["in_channels"], dim, p, stride=p)
        self.pos_embed.register_buffer("pos_embed", sincos_2d(dim, c["pos_embed_max_size"], c["sample_size"] // p))
        self.time_text_embed = nn.Module()
        self.time_text_embed.timestep_embedder = mlp(256, dim)
        self.time_text_embed.text_embedder = mlp(c["pooled_projection_dim"], dim)
        self.context_embedder = nn.Linear(c["joint_attention_dim"], c["caption_projection_dim"])
        n = c["num_layers"]
        self.transformer_blocks = nn.ModuleList(
            [JointBlock(dim, c["num_attention_heads"], c["attention_head_dim"], i == n - 1) for i in range(n)])
        self.norm_out = AdaContinuous(dim)
        self.proj_out = nn.Linear(dim, p * p * c["out_channels"])

    def forward(self, sample, t, states, pooled):
        c, p = self.c, self.c["patch_size"]
        n, _, hh, ww = sample.shape
        h, w = hh // p, ww // p
        mx = c["pos_embed_max_size"]
        x = self.pos_embed.proj(sample).flatten(2).transpose(1, 2)
        top, left = (mx - h) // 2, (mx - w) // 2
        dim = x.shape[-1]
        x = x + self.pos_embed.pos_embed.view(1, mx, mx, dim)[:, top:top + h, left:left + w].reshape(1, h * w, dim)
        te, pe = self.time_text_embed.timestep_embedder, self.time_text_embed.text_embedder
        temb = te.linear_2(F.silu(te.linear_1(timestep_proj(t)))) + pe.linear_2(F.silu(pe.linear_1(pooled)))
        ctx = self.context_embedder(states)
        for blk in self.transformer_blocks:
            x, ctx = blk(x, ctx, temb)
        x = self.proj_out(self.norm_out(x, temb))
        co = c["out_channels"]
        return x.reshape(n, h, w, p, p, co).permute(0, 5, 1, 3, 2, 4).reshape(n, co, h * p, w * p)


LORA_TARGETS = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


def inject_lora(model, r, alpha):
    model.requires_grad_(False)
    layers = []
    for module in list(model.modules()):
        for name in LORA_TARGETS:
            base = getattr(module, name, None)
            if isinstance(base, nn.Linear):
                layer = LoraLinear(base, r, alpha)
                setattr(module, name, layer)
                layers.append(layer)
        out = getattr(module, "to_out", None)
        if isinstance(out, nn.ModuleList) and isinstance(out[0], nn.Linear):
            out[0] = LoraLinear(out[0], r, alpha)
            layers.append(out[0])
        if isinstance(module, FeedForward):
            module.net[0].proj = LoraLinear(module.net[0].proj, r, alpha)
            module.net[2] = LoraLinear(module.net[2], r, alpha)
            layers += [module.net[0].proj, module.net[2]]
    return layers


def shifted_sigmas(T=1000, shift=3.0):
    s = torch.linspace(1, T, T, dtype=torch.float64).flip(0) / T  # FlowMatchEulerDiscreteScheduler's training table
    return (shift * s / (1 + (shift - 1) * s)).float()


def setup(cfg):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = SD3Transformer(cfg["transformer"])
    n_params = sum(p.numel() for p in model.parameters())
    if cfg["mode"] == "full":
        reference = copy.deepcopy(model).requires_grad_(False).eval()
        lora = []
    else:
        lora = inject_lora(model, cfg["rank"], cfg["alpha"])
        reference = None
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2)
    sigmas = shifted_sigmas()
    tc = cfg["transformer"]
    N, L, D, P, lat, C, beta = cfg["pairs"], cfg["seq_len"], tc["joint_attention_dim"], tc["pooled_projection_dim"], cfg["latent"], tc["in_channels"], cfg["beta"]
    pool = 4 * N
    chosen_all = torch.randn(pool, C, lat, lat, generator=g)
    rejected_all = torch.randn(pool, C, lat, lat, generator=g)
    states_all = torch.randn(pool, L, D, generator=g)
    pooled_all = torch.randn(pool, P, generator=g)
    states_empty = torch.randn(1, L, D, generator=g)
    pooled_empty = torch.randn(1, P, generator=g)
    state = {"k": 0, "persistent": 0}

    reference_forward = reference_forward_of(model, reference, lora)

    def step():
        k = state["k"] % 4
        state["k"] += 1
        x0 = torch.cat([chosen_all[k * N:(k + 1) * N], rejected_all[k * N:(k + 1) * N]], 0)
        states = states_all[k * N:(k + 1) * N].clone()
        pooled = pooled_all[k * N:(k + 1) * N].clone()
        noise = torch.randn(N, C, lat, lat, generator=g)
        u = torch.sigmoid(torch.randn(N, generator=g))
        idx = (u * 1000).long().clamp(max=999)
        drop = torch.rand(N, generator=g) < 0.2
        states[drop] = states_empty
        pooled[drop] = pooled_empty
        ctx, pool2 = torch.cat([states, states], 0), torch.cat([pooled, pooled], 0)
        sigma = torch.cat([sigmas[idx], sigmas[idx]], 0)
        noise2 = torch.cat([noise, noise], 0)
        s4 = sigma.view(-1, 1, 1, 1)
        xt = (1 - s4) * x0 + s4 * noise2
        target = noise2 - x0
        t = sigma * 1000
        pred = model(xt, t, ctx, pool2)
        lw, ll = (pred - target).pow(2).mean(dim=[1, 2, 3]).chunk(2)
        ref = reference_forward(xt, t, ctx, pool2)
        rw, rl = (ref - target).pow(2).mean(dim=[1, 2, 3]).chunk(2)
        inside = -0.5 * beta * ((lw - ll) - (rw - rl))
        loss = -F.logsigmoid(inside).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["persistent"] = max(state["persistent"], held_bytes(model.parameters(), reference, opt))
        return loss.item()

    def memory():
        return {"persistentBytes": state["persistent"], "maxRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    return {"step": step, "memory": memory, "params": n_params, "trainable": sum(p.numel() for p in trainable)}


def serve(threads, cfg):
    torch.set_num_threads(threads)
    ops = setup(cfg)
    serve_forever(ops, {"params": lambda: ops["params"], "trainable": lambda: ops["trainable"], "memory": ops["memory"]})


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    kinds = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        out[name] = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=kinds[h["dtype"]]).reshape(h["shape"]).float()
    return out


def check(case_dir):
    """The twin against diffusers: max |ours - ref| / max |ref| on the reference case's forward."""
    case = json.load(open(os.path.join(case_dir, "case.json")))
    cfg = json.load(open(os.path.join(case_dir, "transformer", "config.json")))
    cfg["out_channels"] = cfg.get("out_channels") or cfg["in_channels"]
    model = SD3Transformer(cfg)
    model.load_state_dict(read_safetensors(os.path.join(case_dir, "transformer", "diffusion_pytorch_model.safetensors")), strict=True)

    def io(name):
        spec = case["inputs"].get(name) or case["outputs"][name]
        return torch.from_numpy(__import__("numpy").fromfile(os.path.join(case_dir, spec["file"]), dtype="<f4").reshape(spec["shape"]).copy())

    with torch.no_grad():
        out = model(io("hidden_states"), io("timestep"), io("encoder_hidden_states"), io("pooled_projections"))
    ref = io("transformer_out")
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"relativeError": err, "params": n_params, "expectedParams": case["components"]["transformer"]["num_parameters"]}))
    return 0 if err < 1e-4 and n_params == case["components"]["transformer"]["num_parameters"] else 1


if __name__ == "__main__":
    if sys.argv[1] == "check":
        sys.exit(check(sys.argv[2]))
    serve(int(sys.argv[2]), json.loads(sys.argv[3]))
