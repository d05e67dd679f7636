#!/usr/bin/python3
"""Golden safetensors fixture for test/io/safetensors.test.ts, written by PyTorch independently of our TS.

Debian has no python `safetensors` package, so this writes the format by hand from its spec
(8-byte little-endian header length, JSON header, data buffer) using torch's own byte layout for
each dtype, and records the values torch holds (as float64 / int) in a JSON file. The test reads
the .safetensors with our reader and compares with the JSON.

Run with Debian's python (torch 1.13):  /usr/bin/python3 scripts/golden/io/make_safetensors.py
"""
import json
import os
import struct

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "test", "golden", "io")

g = torch.Generator().manual_seed(1234)
base = torch.randn(3, 5, generator=g, dtype=torch.float64) * 3
tensors = {
    "w.f64": base,
    "w.f32": base.to(torch.float32),
    "w.f16": base.to(torch.float16),
    "w.bf16": base.to(torch.bfloat16),
    "ids.i64": torch.tensor([-(2**40), -1, 0, 7, 2**53 - 1], dtype=torch.int64),
    "ids.i32": torch.tensor([[-(2**31), 5], [2**31 - 1, 0]], dtype=torch.int32),
    "mask.bool": torch.tensor([True, False, True], dtype=torch.bool),
    "empty": torch.zeros(0, 4, dtype=torch.float32),
}
CODE = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}

def raw(t):
    t = t.contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().tobytes()  # little-endian host

header = {"__metadata__": {"format": "pt", "made_by": "make_safetensors.py"}}
data = b""
for name in sorted(tensors):  # deliberately name order (not the writer's dtype order): readers must not care
    b = raw(tensors[name])
    header[name] = {"dtype": CODE[tensors[name].dtype], "shape": list(tensors[name].shape),
                    "data_offsets": [len(data), len(data) + len(b)]}
    data += b
hjson = json.dumps(header, separators=(",", ":")).encode()
with open(os.path.join(OUT, "torch_written.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(hjson)) + hjson + data)

expected = {}
for name, t in tensors.items():
    if t.dtype.is_floating_point:
        values = t.to(torch.float64).flatten().tolist()
        bits = t.view(torch.int16).flatten().tolist() if t.dtype in (torch.float16, torch.bfloat16) else None
    else:
        values = [int(v) for v in t.flatten().tolist()]
        bits = None
    expected[name] = {"dtype": CODE[t.dtype], "shape": list(t.shape), "values": values,
                      **({"bits": [b & 0xFFFF for b in bits]} if bits is not None else {})}
with open(os.path.join(OUT, "torch_written.json"), "w") as f:
    json.dump({"metadata": header["__metadata__"], "tensors": expected}, f, indent=1)
print("wrote", OUT)
