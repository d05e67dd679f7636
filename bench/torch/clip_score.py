#!/usr/bin/python3
"""PyTorch reference for bench/cases/clip-score.ts: transformers' CLIPModel forward written in plain
torch (Debian's torch 1.13 has no transformers), on the clip-reward reference model's weights
(read from its model.safetensors with a small reader below): patch conv + class/position embedding,
pre_layrnorm, pre-norm layers (quick_gelu MLP), post_layernorm(CLS), visual_projection; text token +
position embedding, causal layers, final_layer_norm, state at the first eos 49407, text_projection;
score = cos(image, text) of each row.

Work per call: B images [B, 3, 32, 32] (the case's pixel_values repeated) and B prompts (its
input_ids repeated) -> B cosines.  Protocol as bench/torch/engine.py: `serve THREADS CONFIG_JSON`
({"dir": case folder, "batch": B, "config": the full CLIPConfig}); ops "score" (timed, n runs) and
"check" (the first 4 cosines, to confirm the twin computes what ours does).
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

from serve_loop import serve_forever  # noqa: E402 (bench/torch is the script directory)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[a:b], dtype=np.float32).copy()).reshape(v["shape"])
    return out


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def layer(x, w, p, heads, eps, mask):
    n, l, d = x.shape
    hd = d // heads
    h = F.layer_norm(x, (d,), w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"], eps)
    def proj(name):
        return F.linear(h, w[p + f"self_attn.{name}.weight"], w[p + f"self_attn.{name}.bias"]).reshape(n, l, heads, hd).transpose(1, 2)
    q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")
    s = (q * hd ** -0.5) @ k.transpose(-1, -2)
    if mask is not None:
        s = s + mask
    a = (s.softmax(-1) @ v).transpose(1, 2).reshape(n, l, d)
    x = x + F.linear(a, w[p + "self_attn.out_proj.weight"], w[p + "self_attn.out_proj.bias"])
    h = F.layer_norm(x, (d,), w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"], eps)
    h = F.linear(quick_gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])), w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
    return x + h


def setup(cfg):
    w = read_safetensors(os.path.join(cfg["dir"], "clip", "model.safetensors"))
    vc, tc = cfg["config"]["vision_config"], cfg["config"]["text_config"]
    assert vc["hidden_act"] == "quick_gelu" and tc["hidden_act"] == "quick_gelu"
    B = cfg["batch"]
    px = torch.from_numpy(np.fromfile(os.path.join(cfg["dir"], "io", "pixel_values.bin"), dtype=np.float32)).reshape(2, 3, 32, 32)
    ids = torch.from_numpy(np.fromfile(os.path.join(cfg["dir"], "io", "input_ids.bin"), dtype=np.int64)).reshape(2, -1)
    reps = math.ceil(B / 2)
    px = px.repeat(reps, 1, 1, 1)[:B].contiguous()
    ids = ids.repeat(reps, 1)[:B].contiguous()

    def image_features(x):
        d = vc["hidden_size"]
        p = w["vision_model.embeddings.patch_embedding.weight"]
        e = F.conv2d(x, p, stride=vc["patch_size"]).flatten(2).transpose(1, 2)
        cls = w["vision_model.embeddings.class_embedding"].expand(x.shape[0], 1, d)
        h = torch.cat([cls, e], 1) + w["vision_model.embeddings.position_embedding.weight"]
        h = F.layer_norm(h, (d,), w["vision_model.pre_layrnorm.weight"], w["vision_model.pre_layrnorm.bias"], vc["layer_norm_eps"])
        for i in range(vc["num_hidden_layers"]):
            h = layer(h, w, f"vision_model.encoder.layers.{i}.", vc["num_attention_heads"], vc["layer_norm_eps"], None)
        pooled = F.layer_norm(h[:, 0], (d,), w["vision_model.post_layernorm.weight"], w["vision_model.post_layernorm.bias"], vc["layer_norm_eps"])
        return F.linear(pooled, w["visual_projection.weight"])

    def text_features(t):
        d = tc["hidden_size"]
        l = t.shape[1]
        h = F.embedding(t, w["text_model.embeddings.token_embedding.weight"]) + w["text_model.embeddings.position_embedding.weight"][:l]
        mask = torch.full((l, l), float("-inf")).triu(1)
        for i in range(tc["num_hidden_layers"]):
            h = layer(h, w, f"text_model.encoder.layers.{i}.", tc["num_attention_heads"], tc["layer_norm_eps"], mask)
        h = F.layer_norm(h, (d,), w["text_model.final_layer_norm.weight"], w["text_model.final_layer_norm.bias"], tc["layer_norm_eps"])
        eos = (t == tc["eos_token_id"]).int().argmax(-1)
        return F.linear(h[torch.arange(t.shape[0]), eos], w["text_projection.weight"])

    @torch.no_grad()
    def score():
        a = F.normalize(image_features(px), dim=-1)
        b = F.normalize(text_features(ids), dim=-1)
        return (a * b).sum(-1)

    return {"score": score}, {"check": lambda: score()[:4].tolist()}


def serve(threads, cfg):
    torch.set_num_threads(threads)
    ops, queries = setup(cfg)
    serve_forever(ops, queries)


if __name__ == "__main__":
    serve(int(sys.argv[2]), json.loads(sys.argv[3]))
