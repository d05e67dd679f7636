"""Golden values for src/data/images.ts: the official transform with PIL + torch.

torchvision is not installed on this machine, so the steps of
transforms.Compose([Resize(res, BILINEAR), CenterCrop(res), ToTensor(), Normalize([0.5], [0.5])])
are written out with what torchvision calls underneath for PIL images:
  Resize(int)  -> shorter side = res, longer = int(res * long / short), PIL Image.resize(BILINEAR)
  CenterCrop   -> top = int(round((h - res) / 2)), left = int(round((w - res) / 2))  (Python round)
  ToTensor     -> uint8 HWC -> float CHW / 255
  Normalize    -> (x - 0.5) / 0.5
Run with Debian's python: /usr/bin/python3 scripts/golden/data/augment.py
"""
import json
import numpy as np
import torch
from PIL import Image


def pattern(w, h):
    # same formula as test/data/images.test.ts
    x = np.arange(w)[None, :].repeat(h, 0)
    y = np.arange(h)[:, None].repeat(w, 1)
    r = (x * 255) // (w - 1)
    g = (y * 255) // (h - 1)
    b = (x * y * 255) // ((w - 1) * (h - 1))
    return np.stack([r, g, b], -1).astype(np.uint8)


def transform(arr, res, flip):
    img = Image.fromarray(arr, "RGB")
    w, h = img.size
    if w <= h:
        nw, nh = res, int(res * h / w)
    else:
        nw, nh = int(res * w / h), res
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - res) / 2.0))
    left = int(round((nw - res) / 2.0))
    img = img.crop((left, top, left + res, top + res))
    if flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
    t = (t - 0.5) / 0.5
    return {"resized": [nw, nh], "crop": [top, left], "values": t.flatten().tolist()}


cases = []
for (w, h, res, flip) in [(40, 30, 16, False), (30, 45, 16, True), (24, 24, 16, False), (33, 20, 20, False)]:
    out = transform(pattern(w, h), res, flip)
    cases.append({"width": w, "height": h, "resolution": res, "flip": flip, **out})

with open("test/golden/data/augment.json", "w") as f:
    json.dump({"source": "scripts/golden/data/augment.py (PIL %s, torch %s)" % (Image.__version__, torch.__version__), "cases": cases}, f)
print("wrote test/golden/data/augment.json")
