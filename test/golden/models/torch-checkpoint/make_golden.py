#!/usr/bin/python3
"""Writes checkpoint.pt (torch.save, zip format, pickle protocol 2) and expected.json for
test/models/torch-checkpoint.test.ts. Run with Debian's /usr/bin/python3 (torch 1.13):

    /usr/bin/python3 test/golden/models/torch-checkpoint/make_golden.py

The checkpoint mimics HPS v2's ({"state_dict": OrderedDict, "epoch": …}) and covers what a reader
must handle: float32 / float16 / bfloat16 / int64 / bool storages, an nn.Parameter, a transposed
(non-contiguous) view, a slice with a storage offset, two tensors sharing one storage, a 0-dim
tensor, and non-tensor entries. expected.json holds every tensor's dtype, shape and values (as
float64 lists, row-major) and the non-tensor values.
"""
import collections
import json
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
g = torch.Generator().manual_seed(0)
base = torch.randn(4, 6, generator=g)
shared = torch.randn(10, generator=g)
sd = collections.OrderedDict()
sd["visual.proj"] = base                                   # f32 contiguous
sd["transposed"] = base.t()                                # stride (1, 6), same storage as visual.proj
sd["sliced"] = shared[3:8]                                 # storage offset 3
sd["shared_full"] = shared                                 # the whole shared storage
sd["half"] = torch.randn(3, 2, generator=g).half()
sd["bf16"] = torch.randn(5, generator=g).to(torch.bfloat16)
sd["ids"] = torch.arange(7, dtype=torch.int64) * 1000003
sd["mask"] = torch.tensor([True, False, True])
sd["logit_scale"] = torch.nn.Parameter(torch.tensor(2.5))  # 0-dim parameter
ckpt = {"epoch": 3, "name": "golden", "lr": 1e-4, "state_dict": sd}
torch.save(ckpt, os.path.join(HERE, "checkpoint.pt"))

expected = {
    "tensors": {
        k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape), "values": v.detach().double().flatten().tolist() if v.dtype != torch.bool else v.flatten().int().tolist()}
        for k, v in sd.items()
    },
    "epoch": 3, "name": "golden", "lr": 1e-4,
}
with open(os.path.join(HERE, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
    f.write("\n")
