"""Writes test/golden/models/unet_names.json: parameter names and shapes of the diffusers-named
reference UNet (unet_reference.py) for the tiny, variant, no-mid and SD1.5 configs.
SD1.5 is built on torch's meta device (no allocation).
Run: /usr/bin/python3 scripts/golden/models/unet_names.py
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import unet_reference as ref  # noqa: E402
from unet_configs import NO_MID, SD15, TINY, VARIANT, model_kwargs  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")


def describe(cfg, meta):
    ref.DEVICE = "meta" if meta else None
    model = ref.UNet2DConditionModel(**model_kwargs(cfg))
    ref.DEVICE = None
    return [[n, list(p.shape)] for n, p in model.named_parameters()]


out = {}
for name, cfg, meta in [("tiny", TINY, False), ("variant", VARIANT, False), ("no_mid", NO_MID, False), ("sd15", SD15, True)]:
    out[name] = {"config": cfg, "params": describe(cfg, meta)}
path = os.path.join(ROOT, "test", "golden", "models", "unet_names.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print("wrote", path, {k: len(v["params"]) for k, v in out.items()})
