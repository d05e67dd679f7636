#!/usr/bin/python3
"""Golden names, shapes and outputs for src/models/clip/text-model.ts.

Run with Debian's PyTorch:  /usr/bin/python3 scripts/golden/models/clip_text.py
Writes test/golden/models/clip_text.json.

transformers is not installed here, so this is a compact torch.nn transcription of transformers'
modeling_clip.py (CLIPTextEmbeddings, CLIPAttention, CLIPMLP, CLIPEncoderLayer, CLIPEncoder,
CLIPTextTransformer, CLIPTextModel / CLIPTextModelWithProjection), read from the source, not
copied. Its attribute names produce the state-dict names real checkpoints use.

Weights: deterministic, so the TypeScript test rebuilds them bit for bit without a file exchange.
Parameters sorted by name; parameter i is drawn from torch.Generator().manual_seed(1000 + i):
  r = randn(shape); >=2-D weights: r / sqrt(prod(shape[1:])); 1-D norm weights: 1 + 0.1 r;
  everything else (biases): 0.1 r.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "test", "golden", "models", "clip_text.json")


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embedding = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        # transformers >= 4.31 registers position_ids with persistent=False (not in the state dict)
        self.register_buffer("position_ids", torch.arange(c["max_position_embeddings"]).expand((1, -1)), persistent=False)

    def forward(self, ids):
        pos = self.position_ids[:, : ids.shape[-1]]
        return self.token_embedding(ids) + self.position_embedding(pos)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.head_dim = d // self.heads
        self.scale = self.head_dim ** -0.5
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, causal):
        n, l, d = x.shape
        q = (self.q_proj(x) * self.scale).view(n, l, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(n, l, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(n, l, self.heads, self.head_dim).transpose(1, 2)
        w = q @ k.transpose(-1, -2) + causal
        w = w.softmax(-1)
        o = (w @ v).transpose(1, 2).reshape(n, l, d)
        return self.out_proj(o)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.act = quick_gelu if c["hidden_act"] == "quick_gelu" else F.gelu
        self.fc1 = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.fc2 = nn.Linear(c["intermediate_size"], c["hidden_size"])

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.layer_norm1 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.mlp = MLP(c)
        self.layer_norm2 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, x, causal):
        x = x + self.self_attn(self.layer_norm1(x), causal)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(c) for _ in range(c["num_hidden_layers"])])


class TextTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, ids):
        h = self.embeddings(ids)
        l = ids.shape[1]
        causal = torch.full((l, l), torch.finfo(h.dtype).min).triu(1)
        hidden_states = [h]
        for layer in self.encoder.layers:
            h = layer(h, causal)
            hidden_states.append(h)
        last = self.final_layer_norm(h)
        rows = torch.arange(last.shape[0])
        if self.c["eos_token_id"] == 2:
            idx = ids.to(torch.int).argmax(dim=-1)
        else:
            idx = (ids.to(torch.int) == self.c["eos_token_id"]).int().argmax(dim=-1)
        pooled = last[rows, idx]
        return last, pooled, hidden_states


class CLIPTextModel(nn.Module):
    def __init__(self, c, with_projection=False):
        super().__init__()
        self.text_model = TextTransformer(c)
        if with_projection:
            self.text_projection = nn.Linear(c["hidden_size"], c["projection_dim"], bias=False)
        else:
            self.text_projection = None

    def forward(self, ids):
        last, pooled, hs = self.text_model(ids)
        embeds = self.text_projection(pooled) if self.text_projection is not None else None
        return last, pooled, embeds, hs


def fill_weights(model):
    names = sorted(n for n, _ in model.named_parameters())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for i, name in enumerate(names):
            p = params[name]
            r = torch.randn(p.shape, generator=torch.Generator().manual_seed(1000 + i))
            if p.dim() >= 2:
                p.copy_(r / math.sqrt(math.prod(p.shape[1:])))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * r)
            else:
                p.copy_(0.1 * r)


TINY = dict(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=64,
            eos_token_id=49407)


def ids_batch():
    bos, eos = 49406, 49407
    row0 = [bos, 320, 1125, 539, 320, 2368, eos] + [eos] * 70  # SD1.x tokenizer: pad with <|endoftext|>
    row1 = [bos] + list(range(1000, 1011)) + [eos] + [0] * 64  # SD2 tokenizer: pad with "!" (id 0)
    row2 = [bos] + [(37 * k) % 49000 + 100 for k in range(76)]  # truncated: no EOS at all
    return torch.tensor([row0, row1, row2], dtype=torch.int64)


def round_list(t):
    return [float(v) for v in t.detach().double().flatten().tolist()]


def run_case(config, with_projection):
    torch.manual_seed(0)
    model = CLIPTextModel(config, with_projection)
    fill_weights(model)
    ids = ids_batch()
    with torch.no_grad():
        last, pooled, embeds, hs = model(ids)
    case = {
        "config": config,
        "with_projection": with_projection,
        "ids": ids.tolist(),
        "names": [[n, list(p.shape)] for n, p in model.state_dict().items()],
        "last_hidden_first8": round_list(last[:, :8, :]),
        "last_hidden_sum": float(last.double().sum()),
        "last_hidden_abs_sum": float(last.double().abs().sum()),
        "pooled": round_list(pooled),
        "penultimate_sum": float(hs[-2].double().sum()),
        "penultimate_abs_sum": float(hs[-2].double().abs().sum()),
        "num_hidden_states": len(hs),
    }
    if embeds is not None:
        case["text_embeds"] = round_list(embeds)
    return case


def main():
    cases = {
        "tiny_quick_gelu_eos49407_projection": run_case(TINY, True),
        "tiny_gelu_eos2": run_case(dict(TINY, hidden_act="gelu", eos_token_id=2, num_hidden_layers=3), False),
    }
    # Stable Diffusion 1.x's text encoder (openai/clip-vit-large-patch14's text tower): names and
    # shapes only (its real model.safetensors holds these 196 tensors plus the legacy position_ids)
    sd15 = dict(TINY, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                projection_dim=768, eos_token_id=2)
    sd15_names = [[n, list(p.shape)] for n, p in CLIPTextModel(sd15).state_dict().items()]
    with open(OUT, "w") as f:
        json.dump({"generator": "scripts/golden/models/clip_text.py", "torch": torch.__version__, "cases": cases,
                   "sd15": {"config": sd15, "names": sd15_names}}, f)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
