#!/usr/bin/python3
"""PyTorch reference for bench/cases/ddp.ts: one rank of a torch.distributed (Gloo) data-parallel
Diffusion-DPO run, the same step as our DpoTrainer on the same architecture (diffusers'
UNet2DConditionModel from the independent torch.nn transcription in scripts/golden/models/).

Per step, on each rank, B pairs of its shard: x0 = [chosen..., rejected...] (2B images 3x32x32);
one t ~ U{0..999} and one eps per pair shared by its two images; conditioning [B, L, D] (a frozen
text encoder's output stand-in; dropped prompts, p = 0.2, get zeros); x_t = sqrt(abar) x0 +
sqrt(1 - abar) eps; policy (DistributedDataParallel: bucketed gradient all-reduce overlapped with
backward) and frozen reference (no grad) predictions; per-sample MSE over C,H,W; loss =
mean(-logsigmoid(-beta/2 * ((Lw - Ll) - (Rw - Rl)))); metrics (loss, implicit acc, MSEs, margin)
averaged across ranks with one all-reduce; clip_grad_norm_ 1.0; AdamW(lr 1e-5, wd 1e-2).
With WORLD_SIZE 1 it runs the same step without DDP (as ours runs without a process group).

Started by bench/cases/ddp.ts through our launcher (torchrun's variables MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE; DDPO_THREADS threads): `ddp.py SPEC_JSON`; rank 0 writes
{"seconds": [...per timed step], "params": N, "worldSize": W} to SPEC["result"].
"""
import copy
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "golden", "models"))
import unet_reference  # noqa: E402


def allreduce_bench(spec):
    """Times spec["reps"] all-reduces of one spec["bytes"] f32 tensor (the ddp bench's link figure)."""
    dist.init_process_group("gloo")
    t = torch.zeros(spec["bytes"] // 4)
    seconds = []
    for i in range(spec["warmup"] + spec["reps"]):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        if i >= spec["warmup"]:
            seconds.append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        with open(spec["result"], "w") as f:
            json.dump({"seconds": seconds}, f)
    dist.destroy_process_group()


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("mode") == "allreduce":
        return allreduce_bench(spec)
    torch.set_num_threads(int(os.environ.get("DDPO_THREADS", "1")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    cfg = {k: v for k, v in spec["unet"].items() if k in unet_reference.DEFAULTS}
    unet = unet_reference.UNet2DConditionModel(**cfg)
    params = sum(p.numel() for p in unet.parameters())
    reference = copy.deepcopy(unet).requires_grad_(False).eval()
    policy = torch.nn.parallel.DistributedDataParallel(unet) if world > 1 else unet
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2)
    B, L, D, beta = spec["pairsPerProcess"], spec["condLen"], cfg["cross_attention_dim"], spec["beta"]
    g = torch.Generator().manual_seed(1 + rank)
    m = 16 * B
    base = torch.randn(m, 3, 32, 32, generator=g) * 0.5
    chosen, rejected = (base + 0.1).clamp(-1, 1), (base - 0.1).clamp(-1, 1)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()

    def step(k):
        idx = torch.arange(k * B, (k + 1) * B) % m
        x0 = torch.cat([chosen[idx], rejected[idx]], 0)
        noise = torch.randn(B, 3, 32, 32, generator=g)
        t = torch.randint(0, 1000, (B,), generator=g)
        keep = (torch.rand(B, generator=g) >= 0.2).float().view(B, 1, 1)
        cond = torch.randn(B, L, D, generator=g) * keep
        noise2, t2, cond2 = torch.cat([noise, noise]), torch.cat([t, t]), torch.cat([cond, cond])
        a = abar[t2].sqrt().view(-1, 1, 1, 1)
        s = (1 - abar[t2]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + s * noise2
        pred = policy(xt, t2, cond2)
        err = (pred - noise2).pow(2).mean(dim=(1, 2, 3))
        lw, ll = err.chunk(2)
        with torch.no_grad():
            rerr = (reference(xt, t2, cond2) - noise2).pow(2).mean(dim=(1, 2, 3))
            rw, rl = rerr.chunk(2)
        inside = -0.5 * beta * ((lw - ll) - (rw - rl))
        loss = -F.logsigmoid(inside).mean()
        loss.backward()
        with torch.no_grad():
            metrics = torch.stack([loss, (inside > 0).float().mean(), 0.5 * (lw + ll).mean(), 0.5 * (rw + rl).mean(),
                                   ((lw - ll) - (rw - rl)).mean()]).double()
        if world > 1:
            dist.all_reduce(metrics)
            metrics /= world
        metrics.tolist()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = []
    for k in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        step(k)
        if k >= spec["warmup"]:
            seconds.append(time.perf_counter() - t0)
    if rank == 0:
        with open(spec["result"], "w") as f:
            json.dump({"seconds": seconds, "params": params, "worldSize": world}, f)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
