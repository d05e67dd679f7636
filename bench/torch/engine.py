#!/usr/bin/python3
"""PyTorch reference for bench/cases/engine.ts and bench/cases/unet-step.ts.

The bench drives this as a worker so that ours and PyTorch alternate run by run under the same
machine load (the bench machine is shared; load swings would otherwise favour whichever side ran
in a quiet moment):

  /usr/bin/python3 bench/torch/engine.py serve THREADS
  stdin:  one JSON command per line, {"op": NAME, "n": REPEATS}
  stdout: one JSON reply per line, {"seconds": mean seconds per call} (or {"value": ...} for info)

Ops: matmul (1024x1024 @ 1024x1024), conv_fwd (3x3 64->64 on [16,64,32,32], no grad),
conv_fwdbwd (the same with input/weight/bias gradients of out.sum()), tiny_op (add of two [4]
tensors, n is the loop length), tiny_autograd ((p*q).sum().backward() on [4]), unet_step and
unet_forward (bench/torch/unet_step.py's model, batch [16,3,32,32], AdamW), unet_params (info).
Each op's tensors are made once, on first use, from torch.Generator().manual_seed(0).
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def setup_engine():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1024, 1024, generator=g)
    b = torch.randn(1024, 1024, generator=g)
    x = torch.randn(16, 64, 32, 32, generator=g)
    w = torch.randn(64, 64, 3, 3, generator=g) * 0.05
    bias = torch.randn(64, generator=g)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, bias))
    p = torch.randn(4, generator=g)
    q = torch.randn(4, generator=g)
    pg = p.clone().requires_grad_()

    def conv_fwd():
        with torch.no_grad():
            F.conv2d(x, w, bias, padding=1)

    def conv_fwdbwd():
        xg.grad = wg.grad = bg.grad = None
        F.conv2d(xg, wg, bg, padding=1).sum().backward()

    def tiny_op():
        p + q

    def tiny_autograd():
        (pg * q).sum().backward()

    return {"matmul": lambda: a @ b, "conv_fwd": conv_fwd, "conv_fwdbwd": conv_fwdbwd,
            "tiny_op": tiny_op, "tiny_autograd": tiny_autograd}


def setup_unet():
    import unet_step
    state = unet_step.make_step()
    return {"unet_step": state["step"], "unet_forward": state["forward"],
            "unet_params": state["params"]}


def serve(threads):
    torch.set_num_threads(threads)
    ops = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        if op == "info":
            reply = {"value": {"torch": torch.__version__, "threads": torch.get_num_threads()}}
        else:
            if op not in ops:
                ops.update(setup_unet() if op.startswith("unet") else setup_engine())
            fn = ops[op]
            if op == "unet_params":
                reply = {"value": fn}
            else:
                n = int(cmd.get("n", 1))
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                reply = {"seconds": (time.perf_counter() - t0) / n}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        sys.exit("usage: engine.py serve THREADS")
    serve(int(sys.argv[2]))
