#!/usr/bin/python3
"""Golden numbers for the tensor engine, computed by Debian's PyTorch (python3-torch 1.13).

Run:  /usr/bin/python3 scripts/golden/engine/make_golden.py
Writes test/golden/engine/ops.json (op outputs and input gradients), random.json (generator
sequences and torch.nn initialisation) and optim.json (AdamW, Adafactor, gradient clipping and
learning-rate schedules). test/engine/*.test.ts regenerate the same inputs from the seeds stored
here (our Generator reproduces torch.Generator().manual_seed(seed) bit for bit), so only seeds,
outputs and gradients are stored.

Every op case: inputs drawn from torch.Generator().manual_seed(seed); out = op(inputs);
gradients of sum(out * w) for w = randn(out.shape, seed=wSeed) with respect to each float input.
The case ids must match test/engine/opTable.ts one to one.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
OUT_DIR = os.path.join(ROOT, "test", "golden", "engine")


def gen(seed):
    return torch.Generator().manual_seed(seed)


_seed = [100]


def next_seed():
    _seed[0] += 1
    return _seed[0]


def R(*shape):
    """Standard normal float32 input."""
    return {"kind": "randn", "shape": list(shape), "seed": next_seed()}


def P(*shape):
    """Positive float32 input: |randn| + 0.5."""
    return {"kind": "pos", "shape": list(shape), "seed": next_seed()}


def I(low, high, *shape):
    """int64 input from randint(low, high)."""
    return {"kind": "randint", "low": low, "high": high, "shape": list(shape), "seed": next_seed()}


def make_input(spec):
    g = gen(spec["seed"])
    if spec["kind"] == "randn":
        return torch.randn(spec["shape"], generator=g)
    if spec["kind"] == "pos":
        return torch.randn(spec["shape"], generator=g).abs() + 0.5
    if spec["kind"] == "randint":
        return torch.randint(spec["low"], spec["high"], spec["shape"], generator=g)
    raise ValueError(spec["kind"])


CASES = []


def case(cid, inputs, fn, diff=True):
    CASES.append((cid, inputs, fn, diff))


def cat_flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


# ---- elementwise unary -------------------------------------------------------------------
unary = {
    "neg": torch.neg, "exp": torch.exp, "abs": torch.abs, "sin": torch.sin, "cos": torch.cos,
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "silu": F.silu,
    "gelu": F.gelu, "gelu_tanh": lambda a: F.gelu(a, approximate="tanh"),
    "quick_gelu": lambda a: a * torch.sigmoid(1.702 * a), "logsigmoid": F.logsigmoid,
    "square": torch.square, "erf": torch.erf, "expm1": torch.expm1,
}
for name, fn in unary.items():
    case(name, [R(3, 4)], (lambda f: lambda a: f(a))(fn))
for name, fn in {"log": torch.log, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
                 "reciprocal": torch.reciprocal, "log1p": torch.log1p}.items():
    case(name, [P(3, 4)], (lambda f: lambda a: f(a))(fn))
for name, fn in {"sign": torch.sign, "floor": torch.floor, "ceil": torch.ceil, "round": torch.round}.items():
    case(name, [R(3, 4)], (lambda f: lambda a: f(a * 2))(fn), diff=False)

# ---- elementwise binary ------------------------------------------------------------------
case("add_bcast", [R(3, 4), R(4)], lambda a, b: a + b)
case("sub_bcast", [R(3, 4), R(3, 1)], lambda a, b: a - b)
case("mul", [R(3, 4), R(3, 4)], lambda a, b: a * b)
case("div", [R(3, 4), P(3, 4)], lambda a, b: a / b)
case("pow", [P(3, 4), R(3, 4)], lambda a, b: torch.pow(a, b))
case("maximum", [R(3, 4), R(3, 4)], torch.maximum)
case("minimum", [R(3, 4), R(1, 4)], torch.minimum)
case("remainder", [R(3, 4), P(3, 4)], torch.remainder)
case("add_scalar", [R(3, 4)], lambda a: a + 2.5)
case("sub_scalar", [R(3, 4)], lambda a: a - 0.75)
case("mul_scalar", [R(3, 4)], lambda a: a * -1.5)
case("div_scalar", [R(3, 4)], lambda a: a / 3.0)
case("pow_scalar", [P(3, 4)], lambda a: a ** 1.7)
case("rsub", [R(3, 4)], lambda a: 3.0 - a)
case("rdiv", [P(3, 4)], lambda a: 2.0 / a)
case("maximum_scalar", [R(3, 4)], lambda a: torch.clamp(a, min=0.1))
case("minimum_scalar", [R(3, 4)], lambda a: torch.clamp(a, max=-0.2))
case("add_scaled", [R(3, 4), R(3, 4)], lambda a, b: torch.add(a, b, alpha=-0.3))
case("lerp", [R(3, 4), R(3, 4)], lambda a, b: torch.lerp(a, b, 0.25))
case("clamp", [R(3, 4)], lambda a: torch.clamp(a, -0.5, 0.7))
case("clamp_min", [R(3, 4)], lambda a: torch.clamp(a, min=0.0))
case("where", [R(3, 4), R(3, 4)], lambda a, b: torch.where(a > 0, a, b))
case("compare", [R(3, 4), R(3, 4)],
     lambda a, b: torch.stack([a < b, a <= b, a > b, a >= b, a != b, a == a]).float(), diff=False)
case("isfinite_not", [R(3, 4)],
     lambda a: torch.stack([torch.isfinite(torch.log(a)), torch.logical_not(a > 0)]).float(), diff=False)

# ---- reductions --------------------------------------------------------------------------
case("sum_all", [R(2, 3, 4)], lambda a: a.sum())
case("sum_dim", [R(2, 3, 4)], lambda a: a.sum(1))
case("sum_dims_keep", [R(2, 3, 4)], lambda a: a.sum([0, 2], keepdim=True))
case("mean_all", [R(2, 3, 4)], lambda a: a.mean())
case("mean_dim_keep", [R(2, 3, 4)], lambda a: a.mean(-1, keepdim=True))
case("amax", [R(2, 3, 4)], lambda a: a.amax(1))
case("amin", [R(2, 3, 4)], lambda a: a.amin(2))
case("prod_dim", [R(2, 3, 4)], lambda a: a.prod(1))
case("prod_all", [R(2, 3)], lambda a: a.prod())
case("var_unbiased", [R(2, 3, 4)], lambda a: a.var(2))
case("var_biased_keep", [R(2, 3, 4)], lambda a: a.var([0, 1], unbiased=False, keepdim=True))
case("std", [R(2, 3, 4)], lambda a: a.std(1))
case("logsumexp", [R(2, 3, 4)], lambda a: torch.logsumexp(a, -1))
case("norm_all", [R(2, 3, 4)], lambda a: torch.linalg.vector_norm(a))
case("norm_dim_keep", [R(2, 3, 4)], lambda a: torch.linalg.vector_norm(a, 2, [1], keepdim=True))
case("cumsum", [R(2, 3, 4)], lambda a: torch.cumsum(a, 1))
case("argmax_argmin", [R(3, 5)],
     lambda a: torch.cat([a.argmax(1).float(), a.argmin(0, keepdim=True).float().reshape(-1)]), diff=False)

# ---- shape ops ---------------------------------------------------------------------------
case("reshape", [R(2, 3, 4)], lambda a: a.reshape(4, 6))
case("reshape_noncontig", [R(2, 3, 4)], lambda a: a.transpose(0, 2).reshape(4, 6))
case("permute", [R(2, 3, 4)], lambda a: a.permute(2, 0, 1))
case("transpose", [R(2, 3, 4)], lambda a: a.transpose(0, 2))
case("mT", [R(2, 3, 4)], lambda a: a.transpose(-2, -1))
case("expand", [R(3, 1)], lambda a: a.expand(2, 3, 4))
case("unsqueeze", [R(3, 4)], lambda a: a.unsqueeze(-1))
case("squeeze_dim", [R(3, 1, 4)], lambda a: a.squeeze(1))
case("squeeze_all", [R(1, 3, 1)], lambda a: a.squeeze())
case("flatten", [R(2, 3, 4, 2)], lambda a: a.flatten(1, 2))
case("slice_step", [R(2, 5, 3)], lambda a: a[:, 1:5:2])
case("slice_neg", [R(2, 5, 3)], lambda a: a[:, :, -2:])
case("chunk", [R(2, 5)], lambda a: cat_flat(torch.chunk(a, 3, 1)))
case("split", [R(2, 5)], lambda a: cat_flat(torch.split(a, [2, 3], 1)))
case("index_select", [R(3, 5), I(0, 5, 4)], lambda a, i: torch.index_select(a, 1, i))
case("gather", [R(3, 5), I(0, 5, 3, 4)], lambda a, i: torch.gather(a, 1, i))
case("flip", [R(2, 3, 4)], lambda a: torch.flip(a, [0, 2]))
case("repeat", [R(2, 3)], lambda a: a.repeat(2, 1, 3))
case("pad", [R(2, 3, 4)], lambda a: F.pad(a, (1, 2, 0, 1), value=0.5))
case("cat", [R(2, 3), R(2, 4)], lambda a, b: torch.cat([a, b], 1))
case("stack", [R(2, 3), R(2, 3)], lambda a, b: torch.stack([a, b], 1))
case("triu", [R(4, 4)], lambda a: torch.triu(a, 1))
case("triu_neg", [R(4, 4)], lambda a: torch.triu(a, -1))

# ---- neural-network ops ------------------------------------------------------------------
case("matmul_2d", [R(3, 4), R(4, 5)], torch.matmul)
case("matmul_bcast", [R(2, 3, 4), R(4, 5)], torch.matmul)
case("matmul_batched", [R(2, 3, 4), R(2, 4, 2)], torch.matmul)
case("linear", [R(2, 3, 4), R(5, 4), R(5)], F.linear)
case("linear_nobias", [R(3, 4), R(5, 4)], lambda x, w: F.linear(x, w))
case("conv2d", [R(2, 4, 7, 7), R(6, 4, 3, 3), R(6)], lambda x, w, b: F.conv2d(x, w, b, padding=1))
case("conv2d_stride2", [R(2, 4, 7, 7), R(6, 4, 3, 3), R(6)],
     lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1))
case("conv2d_groups", [R(2, 4, 6, 6), R(6, 2, 3, 3), R(6)],
     lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2))
case("conv2d_dilation", [R(1, 3, 8, 8), R(2, 3, 3, 3)],
     lambda x, w: F.conv2d(x, w, None, padding=2, dilation=2))
case("conv2d_1x1", [R(2, 4, 5, 5), R(3, 4, 1, 1)], lambda x, w: F.conv2d(x, w))
case("conv_transpose2d", [R(2, 4, 5, 5), R(4, 3, 3, 3), R(3)],
     lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1))
case("conv_transpose2d_groups", [R(1, 4, 4, 4), R(4, 2, 3, 3), R(4)],
     lambda x, w, b: F.conv_transpose2d(x, w, b, groups=2))
case("conv_transpose2d_k4s2", [R(1, 3, 4, 4), R(3, 2, 4, 4)],
     lambda x, w: F.conv_transpose2d(x, w, None, stride=2, padding=1))
case("group_norm", [R(2, 6, 3, 3), R(6), R(6)], lambda x, w, b: F.group_norm(x, 3, w, b, 1e-5))
case("group_norm_plain", [R(2, 4, 5), ], lambda x: F.group_norm(x, 2, None, None, 1e-6))
case("layer_norm", [R(2, 3, 5), R(5), R(5)], lambda x, w, b: F.layer_norm(x, [5], w, b, 1e-5))
case("layer_norm_2d_plain", [R(2, 3, 5)], lambda x: F.layer_norm(x, [3, 5], None, None, 1e-5))
case("softmax", [R(3, 5)], lambda x: torch.softmax(x, -1))
case("softmax_dim0", [R(3, 5)], lambda x: torch.softmax(x, 0))
case("log_softmax", [R(2, 4, 3)], lambda x: torch.log_softmax(x, 1))


def attention(q, k, v, mask=None, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, -1) @ v


case("attention", [R(2, 3, 4), R(2, 5, 4), R(2, 5, 6)], lambda q, k, v: attention(q, k, v))
case("attention_mask_scale", [R(2, 3, 4), R(2, 5, 4), R(2, 5, 6), R(3, 5)],
     lambda q, k, v, m: attention(q, k, v, m, 0.3))
case("interpolate_nearest_x2", [R(1, 2, 3, 4)], lambda x: F.interpolate(x, scale_factor=2, mode="nearest"))
case("interpolate_nearest_size", [R(1, 2, 3, 4)], lambda x: F.interpolate(x, size=(5, 7), mode="nearest"))
case("interpolate_bilinear", [R(1, 2, 3, 4)],
     lambda x: F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=False))
case("interpolate_bilinear_corners", [R(1, 2, 3, 4)],
     lambda x: F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=True))
case("avg_pool2d", [R(1, 2, 6, 6)], lambda x: F.avg_pool2d(x, 2))
case("avg_pool2d_k3s2", [R(1, 2, 7, 7)], lambda x: F.avg_pool2d(x, 3, 2))
case("embedding", [R(7, 4), I(0, 7, 2, 3)], lambda w, ids: F.embedding(ids, w))
case("mse_none", [R(3, 2, 4), R(3, 2, 4)], lambda a, b: F.mse_loss(a, b, reduction="none"))
case("mse_mean", [R(3, 2, 4), R(3, 2, 4)], lambda a, b: F.mse_loss(a, b))
case("mse_per_sample", [R(3, 2, 4), R(3, 2, 4)], lambda a, b: ((a - b) ** 2).mean([1, 2]))
case("dropout", [R(4, 5)],
     lambda a: a * (torch.empty(4, 5).bernoulli_(0.7, generator=gen(77)) / 0.7))
case("to_f64_and_back", [R(3, 4)], lambda a: (a.double() * 3).float())


def run_ops():
    out = []
    for cid, specs, fn, diff in CASES:
        xs = [make_input(s) for s in specs]
        for x in xs:
            if diff and x.is_floating_point():
                x.requires_grad_(True)
        y = fn(*xs)
        w_seed = next_seed()
        entry = {"id": cid, "inputs": specs, "diff": diff, "wSeed": w_seed,
                 "shape": list(y.shape), "out": y.detach().double().reshape(-1).tolist()}
        if diff:
            w = torch.randn(list(y.shape), generator=gen(w_seed))
            (y * w).sum().backward()
            entry["grads"] = [None if (not x.is_floating_point() or x.grad is None)
                              else x.grad.double().reshape(-1).tolist() for x in xs]
        out.append(entry)
    return out


# ---- random numbers and initialisation --------------------------------------------------
def run_random():
    seqs = []
    for seed, shape in [(0, [7]), (1, [3, 5]), (42, [2, 3, 4]), (1234, [17]), (2 ** 40 + 3, [33])]:
        seqs.append({"fn": "randn", "seed": seed, "shape": shape,
                     "values": torch.randn(shape, generator=gen(seed)).double().reshape(-1).tolist()})
    for seed, shape in [(0, [6]), (5, [4, 5])]:
        seqs.append({"fn": "rand", "seed": seed, "shape": shape,
                     "values": torch.rand(shape, generator=gen(seed)).double().reshape(-1).tolist()})
    for seed, shape in [(3, [10]), (9, [2, 8])]:
        seqs.append({"fn": "randint", "seed": seed, "shape": shape, "low": 0, "high": 1000,
                     "values": torch.randint(0, 1000, shape, generator=gen(seed)).double().reshape(-1).tolist()})
    seqs.append({"fn": "randperm", "seed": 11, "shape": [12],
                 "values": torch.randperm(12, generator=gen(11)).double().tolist()})
    # Two draws in a row from one generator: the second continues the stream.
    g = gen(7)
    first = torch.randn(5, generator=g)
    second = torch.randn(20, generator=g)
    seqs.append({"fn": "randn2", "seed": 7, "shape": [5, 20],
                 "values": torch.cat([first, second]).double().tolist()})

    torch.manual_seed(31)
    lin = torch.nn.Linear(5, 3)
    conv = torch.nn.Conv2d(4, 6, 3)
    convt = torch.nn.ConvTranspose2d(4, 3, 3)
    emb = torch.nn.Embedding(7, 4)
    init = {"seed": 31, "tensors": {
        "linear.weight": lin.weight, "linear.bias": lin.bias,
        "conv.weight": conv.weight, "conv.bias": conv.bias,
        "convt.weight": convt.weight, "convt.bias": convt.bias,
        "emb.weight": emb.weight}}
    init["tensors"] = {k: v.detach().double().reshape(-1).tolist() for k, v in init["tensors"].items()}
    return {"sequences": seqs, "init": init}


# ---- optimizers ------------------------------------------------------------------------------
def opt_problem():
    W = torch.randn([4, 3], generator=gen(500)).requires_grad_()
    b = torch.randn([3], generator=gen(501)).requires_grad_()
    K = torch.randn([2, 3, 2, 2], generator=gen(502)).requires_grad_()
    X = torch.randn([5, 4], generator=gen(503))
    Y = torch.randn([5, 3], generator=gen(504))
    C = torch.randn([2, 3, 2, 2], generator=gen(505))

    def loss_fn():
        return ((X @ W + b - Y) ** 2).mean() + (torch.sin(K) * C).sum()

    return {"W": W, "b": b, "K": K}, loss_fn


class AdafactorTranscribed:
    """transformers.optimization.Adafactor.step for one parameter group, transcribed with
    scale_parameter=False, relative_step=False, warmup_init=False (so lr is the given lr)."""

    def __init__(self, params, lr, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8,
                 beta1=None, weight_decay=0.0):
        self.params = params
        self.lr, self.eps, self.clip_threshold = lr, eps, clip_threshold
        self.decay_rate, self.beta1, self.weight_decay = decay_rate, beta1, weight_decay
        self.state = {}

    @staticmethod
    def _rms(t):
        return t.norm(2) / (t.numel() ** 0.5)

    @staticmethod
    def _approx_sq_grad(row, col):
        r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
        c_factor = col.unsqueeze(-2).rsqrt()
        return torch.mul(r_factor, c_factor)

    @torch.no_grad()
    def step(self):
        for name, p in self.params.items():
            grad = p.grad
            state = self.state.setdefault(name, {})
            shape = grad.shape
            factored = len(shape) >= 2
            use_first_moment = self.beta1 is not None
            if len(state) == 0:
                state["step"] = 0
                if use_first_moment:
                    state["exp_avg"] = torch.zeros_like(grad)
                if factored:
                    state["exp_avg_sq_row"] = torch.zeros(shape[:-1]).to(grad)
                    state["exp_avg_sq_col"] = torch.zeros(shape[:-2] + shape[-1:]).to(grad)
                else:
                    state["exp_avg_sq"] = torch.zeros_like(grad)
            state["step"] += 1
            lr = self.lr  # relative_step=False, scale_parameter=False
            beta2t = 1.0 - math.pow(state["step"], self.decay_rate)
            update = (grad ** 2) + self.eps[0]
            if factored:
                row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
                row.mul_(beta2t).add_(update.mean(dim=-1), alpha=(1.0 - beta2t))
                col.mul_(beta2t).add_(update.mean(dim=-2), alpha=(1.0 - beta2t))
                update = self._approx_sq_grad(row, col)
                update.mul_(grad)
            else:
                sq = state["exp_avg_sq"]
                sq.mul_(beta2t).add_(update, alpha=(1.0 - beta2t))
                update = sq.rsqrt().mul_(grad)
            update.div_((self._rms(update) / self.clip_threshold).clamp_(min=1.0))
            update.mul_(lr)
            if use_first_moment:
                exp_avg = state["exp_avg"]
                exp_avg.mul_(self.beta1).add_(update, alpha=(1 - self.beta1))
                update = exp_avg
            if self.weight_decay != 0:
                p.add_(p, alpha=(-self.weight_decay * lr))
            p.add_(-update)


def flat(t):
    return t.detach().double().reshape(-1).tolist()


def run_optim():
    result = {}
    steps = 5
    configs = {
        "adamw": lambda ps: torch.optim.AdamW(list(ps.values()), lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                                               weight_decay=1e-2),
        "adafactor": lambda ps: AdafactorTranscribed(ps, lr=1e-2, clip_threshold=1.0),
        "adafactor_beta1_wd": lambda ps: AdafactorTranscribed(ps, lr=1e-2, clip_threshold=1.0, beta1=0.9,
                                                              weight_decay=1e-2),
    }
    for key, make in configs.items():
        params, loss_fn = opt_problem()
        opt = make(params)
        losses = []
        for _ in range(steps):
            for p in params.values():
                p.grad = None
            loss = loss_fn()
            loss.backward()
            losses.append(loss.item())
            opt.step()
        entry = {"losses": losses, "params": {k: flat(v) for k, v in params.items()}, "state": {}}
        if key == "adamw":
            for name, p in params.items():
                st = opt.state[p]
                entry["state"][f"{name}.exp_avg"] = flat(st["exp_avg"])
                entry["state"][f"{name}.exp_avg_sq"] = flat(st["exp_avg_sq"])
        else:
            for name, st in opt.state.items():
                for slot in ("exp_avg", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col"):
                    if slot in st:
                        entry["state"][f"{name}.{slot}"] = flat(st[slot])
        result[key] = entry

    clip = {}
    for scale, max_norm in [(1.0, 1.0), (10.0, 1.0), (1.0, 100.0)]:
        params, loss_fn = opt_problem()
        (loss_fn() * scale).backward()
        total = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)
        clip[f"scale{scale:g}_max{max_norm:g}"] = {
            "scale": scale, "maxNorm": max_norm, "norm": total.item(),
            "grads": {k: flat(v.grad) for k, v in params.items()}}
    result["clip"] = clip

    # diffusers.optimization.get_scheduler's lambdas (constant, constant_with_warmup, linear,
    # cosine with num_cycles=0.5), driven through torch's LambdaLR as diffusers does.
    def lambdas(kind, warm, total):
        if kind == "constant":
            return lambda step: 1.0
        if kind == "constant_with_warmup":
            return lambda step: float(step) / float(max(1.0, warm)) if step < warm else 1.0
        if kind == "linear":
            def f(step):
                if step < warm:
                    return float(step) / float(max(1, warm))
                return max(0.0, float(total - step) / float(max(1, total - warm)))
            return f
        if kind == "cosine":
            def g(step):
                if step < warm:
                    return float(step) / float(max(1, warm))
                progress = float(step - warm) / float(max(1, total - warm))
                return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
            return g
        raise ValueError(kind)

    schedules = []
    for kind in ("constant", "constant_with_warmup", "linear", "cosine"):
        for warm, total in [(10, 50), (0, 20)]:
            p = torch.zeros(1, requires_grad=True)
            opt = torch.optim.SGD([p], lr=2.0)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas(kind, warm, total))
            lrs = []
            for _ in range(total + 5):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
            schedules.append({"kind": kind, "warmupSteps": warm, "totalSteps": total, "baseLr": 2.0, "lrs": lrs})
    result["schedules"] = schedules
    return result


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    outputs = {
        "ops.json": {"torch": torch.__version__, "cases": run_ops()},
        "random.json": {"torch": torch.__version__, **run_random()},
        "optim.json": {"torch": torch.__version__, **run_optim()},
    }
    for name, value in outputs.items():
        with open(os.path.join(OUT_DIR, name), "w") as f:
            json.dump(value, f, separators=(",", ":"))
            f.write("\n")
        print("wrote", os.path.join(OUT_DIR, name))


if __name__ == "__main__":
    main()
