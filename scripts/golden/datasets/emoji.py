"""Golden pixels for src/datasets/emoji.ts: composite on white + box shrink, computed with PIL/numpy.

For a few emoji PNGs of emoji-datasource-google (64x64 RGBA), decode with PIL, composite in float64
(c*a/255 + 255*(1 - a/255)), average 2x2 (or 4x4) blocks, round half up -> uint8 RGB. Also records
PIL's own alpha_composite + Image.BOX resize, which rounds at each stage and may differ by 1.
Run with Debian's python: /usr/bin/python3 scripts/golden/datasets/emoji.py
"""
import json
import os
import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
IMG = os.path.join(ROOT, "node_modules", "emoji-datasource-google", "img", "google", "64")
FILES = ["1f600.png", "1f44b-1f3fd.png", "1f1ea-1f1ec.png", "2764-fe0f.png"]

out = {"cases": []}
for name in FILES:
    im = Image.open(os.path.join(IMG, name)).convert("RGBA")
    a = np.asarray(im).astype(np.float64)
    alpha = a[..., 3:4] / 255.0
    comp = a[..., :3] * alpha + 255.0 * (1 - alpha)
    for size in (32, 16):
        f = 64 // size
        box = comp.reshape(size, f, size, f, 3).mean(axis=(1, 3))
        ours = np.minimum(255, np.floor(box + 0.5)).astype(np.uint8)
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(white, im).convert("RGB").resize((size, size), Image.BOX)
        out["cases"].append({
            "file": name,
            "size": size,
            "pixels": ours.reshape(-1).tolist(),
            "pilBox": np.asarray(pil).reshape(-1).tolist(),
        })
with open(os.path.join(ROOT, "test", "golden", "datasets", "emoji.json"), "w") as fh:
    json.dump(out, fh)
print("wrote", len(out["cases"]), "cases")
