#!/usr/bin/python3
"""Golden numbers for src/diffusion, computed the way diffusers computes them.

Run with Debian's interpreter (torch 1.13 + numpy; diffusers itself is not installed):
    /usr/bin/python3 scripts/golden/diffusion/make_golden.py
It writes test/golden/diffusion/golden.json.

Everything below is a from-scratch restatement of diffusers' scheduler formulas
(scheduling_ddpm.py, scheduling_ddim.py, scheduling_euler_discrete.py,
scheduling_euler_ancestral_discrete.py, scheduling_dpmsolver_multistep.py with their default
options, rescale_zero_terminal_snr, rescale_noise_cfg, the img2img pipeline's get_timesteps), in
float32 torch tensors as diffusers holds them, with numpy doing the timestep spacing as diffusers
does. It shares no code with the TypeScript it checks.
"""
import json
import math
import os

import numpy as np
import torch

torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "test", "golden", "diffusion", "golden.json")


# ---- schedules -------------------------------------------------------------------------------

def cosine_betas(T, max_beta=0.999):
    def abar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return [min(1 - abar((i + 1) / T) / abar(i / T), max_beta) for i in range(T)]


def rescale_zero_snr(betas):
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas, dim=0)
    s = abar.sqrt()
    s0 = s[0].clone()
    sT = s[-1].clone()
    s = s - sT
    s = s * (s0 / (s0 - sT))
    abar = s ** 2
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def make_betas(cfg, dtype=torch.float32):
    T = cfg["T"]
    if cfg["schedule"] == "linear":
        b = torch.linspace(cfg["beta_start"], cfg["beta_end"], T, dtype=dtype)
    elif cfg["schedule"] == "scaled_linear":
        b = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, T, dtype=dtype) ** 2
    elif cfg["schedule"] == "squaredcos_cap_v2":
        b = torch.tensor(cosine_betas(T), dtype=dtype)
    else:
        raise ValueError(cfg["schedule"])
    if cfg.get("rescale", False):
        b = rescale_zero_snr(b)
    return b


def alphas_cumprod(cfg, dtype=torch.float32):
    return torch.cumprod(1.0 - make_betas(cfg, dtype), dim=0)


SD15 = dict(T=1000, beta_start=0.00085, beta_end=0.012, schedule="scaled_linear", rescale=False,
            prediction="epsilon", steps_offset=1, set_alpha_to_one=False, spacing=None)

SCHEDULES = {
    "sd15": dict(SD15),
    "linear": dict(SD15, beta_start=0.0001, beta_end=0.02, schedule="linear"),
    "cosine": dict(SD15, schedule="squaredcos_cap_v2"),
    "sd15_zero_snr": dict(SD15, rescale=True),
    "linear_zero_snr": dict(SD15, beta_start=0.0001, beta_end=0.02, schedule="linear", rescale=True),
}
SAMPLE_AT = [0, 1, 2, 10, 100, 250, 500, 750, 900, 990, 998, 999]


# ---- timesteps (set_timesteps) ---------------------------------------------------------------

def ts_discrete(spacing, T, n, offset):  # DDPM / DDIM
    if spacing == "linspace":
        return np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        r = T // n
        return (np.arange(0, n) * r).round()[::-1].copy().astype(np.int64) + offset
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
    raise ValueError(spacing)


def ts_euler(spacing, T, n, offset):  # Euler / Euler ancestral (float32)
    if spacing == "linspace":
        return np.linspace(0, T - 1, n, dtype=np.float32)[::-1].copy()
    if spacing == "leading":
        r = T // n
        t = (np.arange(0, n) * r).round()[::-1].copy().astype(np.float32)
        return t + offset
    if spacing == "trailing":
        t = np.arange(T, 0, -T / n).round().copy().astype(np.float32)
        return t - 1
    raise ValueError(spacing)


def ts_dpm(spacing, T, n, offset):  # DPMSolverMultistep (lambda_min_clipped = -inf → last = T)
    if spacing == "linspace":
        return np.linspace(0, T - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
    if spacing == "leading":
        r = T // (n + 1)
        return (np.arange(0, n + 1) * r).round()[::-1][:-1].copy().astype(np.int64) + offset
    if spacing == "trailing":
        return np.arange(T, 0, -T / n).round().copy().astype(np.int64) - 1
    raise ValueError(spacing)


def k_sigmas(cfg, ts):
    ac = alphas_cumprod(cfg)
    if cfg["rescale"]:
        ac[-1] = 2 ** -24
    sig = np.array(((1 - ac) / ac) ** 0.5)
    sig = np.interp(ts, np.arange(0, len(sig)), sig)
    return torch.from_numpy(np.concatenate([sig, [0.0]]).astype(np.float32))


# ---- samplers (one class each, diffusers' step semantics) -------------------------------------

def x0_eps(pred_type, sample, out, abar):
    a = abar ** 0.5
    b = (1 - abar) ** 0.5
    if pred_type == "epsilon":
        return (sample - b * out) / a, out
    if pred_type == "sample":
        return out, (sample - a * out) / b
    if pred_type == "v_prediction":
        return a * sample - b * out, a * out + b * sample
    raise ValueError(pred_type)


def randn_like_gens(shape, gens):
    if isinstance(gens, list):
        return torch.cat([torch.randn((1,) + tuple(shape[1:]), generator=g) for g in gens])
    return torch.randn(shape, generator=gens)


class DDPM:
    def __init__(self, cfg, n, spacing=None):
        self.cfg = cfg
        self.ac = alphas_cumprod(cfg)
        self.timesteps = ts_discrete(spacing or cfg["spacing"] or "leading", cfg["T"], n, cfg["steps_offset"])
        self.init_noise_sigma = 1.0

    def scale(self, x, i):
        return x

    def add_noise(self, x0, noise, i):
        abar = self.ac[int(self.timesteps[i])]
        return abar ** 0.5 * x0 + (1 - abar) ** 0.5 * noise

    def step(self, out, i, x, gens):
        t = int(self.timesteps[i])
        prev_t = -1 if i == len(self.timesteps) - 1 else int(self.timesteps[i + 1])
        ap = self.ac[t]
        app = self.ac[prev_t] if prev_t >= 0 else torch.tensor(1.0)
        bp, bpp = 1 - ap, 1 - app
        cur_a = ap / app
        cur_b = 1 - cur_a
        x0, _ = x0_eps(self.cfg["prediction"], x, out, ap)
        prev = (app ** 0.5 * cur_b) / bp * x0 + cur_a ** 0.5 * bpp / bp * x
        if t > 0:
            z = randn_like_gens(out.shape, gens)
            var = torch.clamp(bpp / bp * cur_b, min=1e-20)
            prev = prev + var ** 0.5 * z
        return prev


class DDIM(DDPM):
    def __init__(self, cfg, n, spacing=None, eta=0.0):
        super().__init__(cfg, n, spacing)
        self.n = n
        self.eta = eta
        self.final = torch.tensor(1.0) if cfg["set_alpha_to_one"] else self.ac[0]

    def step(self, out, i, x, gens):
        t = int(self.timesteps[i])
        prev_t = t - self.cfg["T"] // self.n
        ap = self.ac[t]
        app = self.ac[prev_t] if prev_t >= 0 else self.final
        x0, eps = x0_eps(self.cfg["prediction"], x, out, ap)
        var = (1 - app) / (1 - ap) * (1 - ap / app)
        std = self.eta * var ** 0.5
        prev = app ** 0.5 * x0 + (1 - app - std ** 2) ** 0.5 * eps
        if self.eta > 0:
            prev = prev + std * randn_like_gens(out.shape, gens)
        return prev


class Euler:
    ancestral = False

    def __init__(self, cfg, n, spacing=None):
        self.cfg = cfg
        sp = spacing or cfg["spacing"] or "linspace"
        self.timesteps = ts_euler(sp, cfg["T"], n, cfg["steps_offset"])
        self.sigmas = k_sigmas(cfg, self.timesteps)
        m = self.sigmas.max()
        self.init_noise_sigma = float(m) if sp in ("linspace", "trailing") else float((m ** 2 + 1) ** 0.5)

    def scale(self, x, i):
        return x / ((self.sigmas[i] ** 2 + 1) ** 0.5)

    def add_noise(self, x0, noise, i):
        return x0 + noise * self.sigmas[i]

    def x0(self, out, x, sigma):
        p = self.cfg["prediction"]
        if p == "epsilon":
            return x - sigma * out
        if p == "v_prediction":
            return out * (-sigma / (sigma ** 2 + 1) ** 0.5) + (x / (sigma ** 2 + 1))
        return out

    def step(self, out, i, x, gens):
        sigma = self.sigmas[i]
        x0 = self.x0(out, x, sigma)
        d = (x - x0) / sigma
        if not self.ancestral:
            return x + d * (self.sigmas[i + 1] - sigma)
        s_from, s_to = self.sigmas[i], self.sigmas[i + 1]
        up = (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2) ** 0.5
        down = (s_to ** 2 - up ** 2) ** 0.5
        prev = x + d * (down - sigma)
        return prev + randn_like_gens(out.shape, gens) * up


class EulerA(Euler):
    ancestral = True


class DPMpp2M:
    def __init__(self, cfg, n, spacing=None):
        self.cfg = cfg
        self.timesteps = ts_dpm(spacing or cfg["spacing"] or "linspace", cfg["T"], n, cfg["steps_offset"])
        self.sigmas = k_sigmas(cfg, self.timesteps)
        self.init_noise_sigma = 1.0
        self.outputs = [None, None]
        self.lower = 0

    def scale(self, x, i):
        return x

    @staticmethod
    def a_s(sigma):
        a = 1 / ((sigma ** 2 + 1) ** 0.5)
        return a, sigma * a

    def add_noise(self, x0, noise, i):
        a, s = self.a_s(self.sigmas[i])
        return a * x0 + s * noise

    def step(self, out, i, x, gens):
        n = len(self.timesteps)
        final = i == n - 1
        a_s0, s_s0 = self.a_s(self.sigmas[i])
        p = self.cfg["prediction"]
        if p == "epsilon":
            m = (x - s_s0 * out) / a_s0
        elif p == "v_prediction":
            m = a_s0 * x - s_s0 * out
        else:
            m = out
        self.outputs = [self.outputs[1], m]
        a_t, s_t = self.a_s(self.sigmas[i + 1])
        lam_t = torch.log(a_t) - torch.log(s_t)
        lam_s0 = torch.log(a_s0) - torch.log(s_s0)
        h = lam_t - lam_s0
        if self.lower < 1 or final:
            prev = (s_t / s_s0) * x - (a_t * (torch.exp(-h) - 1.0)) * m
        else:
            a_s1, s_s1 = self.a_s(self.sigmas[i - 1])
            lam_s1 = torch.log(a_s1) - torch.log(s_s1)
            r0 = (lam_s0 - lam_s1) / h
            d0, d1 = m, (1.0 / r0) * (m - self.outputs[0])
            prev = (s_t / s_s0) * x - (a_t * (torch.exp(-h) - 1.0)) * d0 - 0.5 * (a_t * (torch.exp(-h) - 1.0)) * d1
        if self.lower < 2:
            self.lower += 1
        return prev


SAMPLERS = {"ddpm": DDPM, "ddim": DDIM, "euler": Euler, "euler_ancestral": EulerA, "dpmpp_2m": DPMpp2M}


# ---- the dummy model and the runs ------------------------------------------------------------

def dummy_model(x, t):
    t = float(t)
    return 0.8 * math.cos(t / 1500.0) * x + 0.1 * torch.tanh(x) + 0.01 * math.sin(t / 50.0)


def cond_model(x, t, cond):
    # a conditional dummy: the condition's per-sample mean shifts the output
    shift = cond.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
    return dummy_model(x, t) + 0.3 * shift * torch.cos(x)


SHAPE = (3, 8, 8)
SEEDS = [7, 123]


def gens_for(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def initial_noise(gens):
    return torch.cat([torch.randn((1,) + SHAPE, generator=g) for g in gens])


def clean_input():
    g = torch.Generator().manual_seed(2024)
    return torch.randn((len(SEEDS),) + SHAPE, generator=g) * 0.5 + 0.1


def run(name, cfg, n, spacing=None, eta=None, strength=None, model=dummy_model):
    kw = {"eta": eta} if eta is not None else {}
    sch = SAMPLERS[name](cfg, n, spacing, **kw)
    gens = gens_for(SEEDS)
    noise = initial_noise(gens)
    start = 0
    if strength is not None:
        init_t = min(int(n * strength), n)
        start = max(n - init_t, 0)
        if start >= n:
            return sch, clean_input()
        x = sch.add_noise(clean_input(), noise, start)
    else:
        x = noise * sch.init_noise_sigma
    for i in range(start, len(sch.timesteps)):
        t = sch.timesteps[i]
        out = model(sch.scale(x, i), t.item())
        x = sch.step(out, i, x, gens)
    return sch, x


PICK = [0, 1, 5, 17, 64, 100, 191, 192, 250, 300, 383]


def summary(x):
    flat = x.reshape(-1)
    return {
        "shape": list(x.shape),
        "sum": float(x.double().sum()),
        "mean": float(x.double().mean()),
        "absSum": float(x.double().abs().sum()),
        "pick": PICK,
        "values": [float(flat[i]) for i in PICK],
    }


def ts_entry(ts):
    vals = [float(v) for v in ts]
    if len(vals) <= 100:
        return vals
    # long lists: length, sum and both ends
    return {"len": len(vals), "sum": float(sum(vals)), "head": vals[:20], "tail": vals[-20:]}


def main():
    golden = {"schedules": {}, "timesteps": {}, "runs": [], "noise": {}, "guidance": {}, "noising": {}}
    for key, cfg in SCHEDULES.items():
        ac32 = alphas_cumprod(cfg, torch.float32)
        ac64 = alphas_cumprod(cfg, torch.float64)
        b64 = make_betas(cfg, torch.float64)
        golden["schedules"][key] = {
            "config": {k: v for k, v in cfg.items() if k in ("T", "beta_start", "beta_end", "schedule", "rescale")},
            "at": SAMPLE_AT,
            "alphasCumprod32": [float(ac32[i]) for i in SAMPLE_AT],
            "alphasCumprod64": [float(ac64[i]) for i in SAMPLE_AT],
            "betas64": [float(b64[i]) for i in SAMPLE_AT],
            "sumAlphasCumprod64": float(ac64.sum()),
        }

    T = 1000
    steps_list = [1, 2, 3, 7, 10, 20, 25, 30, 50, 100, 333, 999, 1000]
    for fam, fn in (("discrete", ts_discrete), ("euler", ts_euler), ("dpm", ts_dpm)):
        golden["timesteps"][fam] = {}
        for sp in ("leading", "trailing", "linspace"):
            golden["timesteps"][fam][sp] = {str(n): ts_entry(fn(sp, T, n, 1)) for n in steps_list}

    ksig = {}
    for key in ("sd15", "sd15_zero_snr"):
        for sp in ("linspace", "leading", "trailing"):
            sch = Euler(dict(SCHEDULES[key]), 10, sp)
            ksig[f"{key}/{sp}"] = {"sigmas": [float(s) for s in sch.sigmas], "initNoiseSigma": sch.init_noise_sigma}
            dp = DPMpp2M(dict(SCHEDULES[key]), 10, sp)
            ksig[f"{key}/{sp}/dpm"] = {"sigmas": [float(s) for s in dp.sigmas]}
    golden["kSigmas"] = ksig

    gens = gens_for(SEEDS)
    golden["noise"] = {"seeds": SEEDS, "shape": list(SHAPE), "initial": summary(initial_noise(gens)),
                       "clean": summary(clean_input())}

    vcfg = dict(SD15, rescale=True, prediction="v_prediction", spacing="trailing")
    scfg = dict(SD15, prediction="sample")
    runs = []
    for name in SAMPLERS:
        runs.append(dict(sampler=name, schedule="sd15", cfg=SD15))
        runs.append(dict(sampler=name, schedule="sd15_v_zero_snr_trailing", cfg=vcfg))
        runs.append(dict(sampler=name, schedule="sd15", cfg=SD15, strength=0.6))
    for name in ("ddim", "ddpm", "dpmpp_2m"):
        runs.append(dict(sampler=name, schedule="sd15_sample_pred", cfg=scfg))
    runs.append(dict(sampler="ddim", schedule="sd15", cfg=SD15, eta=1.0))
    runs.append(dict(sampler="ddim", schedule="sd15", cfg=SD15, eta=0.5, strength=0.6))
    runs.append(dict(sampler="euler", schedule="sd15", cfg=SD15, spacing="leading"))
    runs.append(dict(sampler="dpmpp_2m", schedule="sd15", cfg=SD15, spacing="leading", steps=25))
    runs.append(dict(sampler="euler", schedule="sd15", cfg=SD15, strength=0.05))
    for r in runs:
        n = r.get("steps", 10)
        sch, x = run(r["sampler"], r["cfg"], n, r.get("spacing"), r.get("eta"), r.get("strength"))
        entry = {k: r[k] for k in ("sampler", "schedule") if k in r}
        for k in ("eta", "strength", "spacing"):
            if r.get(k) is not None:
                entry[k] = r[k]
        entry["steps"] = n
        entry["timesteps"] = [float(t) for t in sch.timesteps]
        entry["initNoiseSigma"] = float(sch.init_noise_sigma)
        entry["out"] = summary(x)
        golden["runs"].append(entry)

    # classifier-free guidance: one guided call and a guided DDIM run
    g = torch.Generator().manual_seed(99)
    cond = torch.randn((2, 4, 5), generator=g)
    uncond = torch.randn((1, 4, 5), generator=g)
    x = torch.randn((2,) + SHAPE, generator=g)
    golden["guidance"]["inputs"] = {"cond": cond.reshape(-1).tolist(), "uncond": uncond.reshape(-1).tolist(),
                                    "x": x.reshape(-1).tolist(), "t": 500}

    def guided(scale, rescale):
        def f(xx, t):
            u = uncond.expand(cond.shape)
            out = cond_model(torch.cat([xx, xx]), t, torch.cat([u, cond]))
            o_u, o_c = out.chunk(2)
            if scale <= 1:
                return cond_model(xx, t, cond)
            r = o_u + scale * (o_c - o_u)
            if rescale > 0:
                dims = list(range(1, o_c.ndim))
                r_std = o_c.std(dim=dims, keepdim=True) / r.std(dim=dims, keepdim=True)
                r = rescale * (r * r_std) + (1 - rescale) * r
            return r
        return f

    for scale, rescale in ((7.5, 0.0), (7.5, 0.7), (3.0, 0.0), (1.0, 0.0)):
        golden["guidance"][f"{scale}/{rescale}"] = summary(guided(scale, rescale)(x, 500))
    _, xg = run("ddim", SD15, 10, model=lambda xx, t: guided(7.5, 0.0)(xx, t))
    golden["guidance"]["ddimRun7.5"] = summary(xg)

    # forward noising and targets at per-sample t
    x0 = clean_input()
    noise = initial_noise(gens_for(SEEDS))
    ts = [37, 901]
    ac = alphas_cumprod(SD15)
    a = torch.stack([ac[t] ** 0.5 for t in ts]).reshape(-1, 1, 1, 1)
    s = torch.stack([(1 - ac[t]) ** 0.5 for t in ts]).reshape(-1, 1, 1, 1)
    golden["noising"] = {"t": ts, "xt": summary(a * x0 + s * noise), "v": summary(a * noise - s * x0)}

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(golden, f, indent=None, separators=(",", ":"))
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
