#!/usr/bin/python3
"""Golden values for src/losses/preference.ts.

Run with Debian's PyTorch:  /usr/bin/python3 scripts/golden/losses/make_golden.py
Writes test/golden/losses/preference.json.

Each formula below is a plain transcription of the published code it names (read, not copied):
- dpo: SalesforceAIResearch/DiffusionDPO train.py: per-sample MSE mean over C,H,W; chunk(2);
  model_diff = Lw - Ll; ref_diff = Rw - Rl; inside = -0.5 * beta * (model_diff - ref_diff);
  loss = -logsigmoid(inside).mean(); implicit_acc = (inside > 0).sum() / N.
- diffusers' form (research_projects/diffusion_dpo): logits = ref_diff - model_diff;
  loss = -logsigmoid(beta_d * logits).mean(), ties count 1/2 in implicit_acc.
- hinge: relu(1 - beta_d * logits); ipo: (logits - 1/(2*beta_d))**2 with the DPO beta_d
  (diffusers' branch reads the undefined args.beta).
- sft: MSE on the chosen half only.
- mapo (Hong et al. 2024, arXiv 2406.06424): log_odds = sLw/(exp(sLw)-1) - sLl/(exp(sLl)-1);
  ratio = logsigmoid(T * log_odds); loss = Lw.mean() - beta_mapo * ratio.mean().
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "test", "golden", "losses", "preference.json")


def official_dpo(lw, ll, rw, rl, beta):
    model_diff = lw - ll
    ref_diff = rw - rl
    inside = -0.5 * beta * (model_diff - ref_diff)
    loss = -1 * F.logsigmoid(inside).mean()
    acc_official = (inside > 0).sum().double() / inside.size(0)
    acc_ties_half = acc_official + 0.5 * (inside == 0).sum().double() / inside.size(0)
    return inside, loss, acc_official, acc_ties_half


def diffusers_dpo(lw, ll, rw, rl, beta_d):
    logits = (rw - rl) - (lw - ll)
    return (-1 * F.logsigmoid(beta_d * logits)).mean()


def hinge(lw, ll, rw, rl, beta_d):
    logits = (rw - rl) - (lw - ll)
    return torch.relu(1 - beta_d * logits).mean()


def ipo(lw, ll, rw, rl, beta_d):
    logits = (rw - rl) - (lw - ll)
    return ((logits - 1 / (2 * beta_d)) ** 2).mean()


def mapo(lw, ll, beta_mapo, snr_value, T):
    log_odds = (snr_value * lw) / (torch.exp(snr_value * lw) - 1) - (snr_value * ll) / (torch.exp(snr_value * ll) - 1)
    ratio = F.logsigmoid(log_odds * T)
    return lw.mean() - (beta_mapo * ratio).mean()


def errors_case(name, lw, ll, rw, rl, beta, dtype):
    t = lambda v: torch.tensor(v, dtype=dtype)
    lw, ll, rw, rl = t(lw), t(ll), t(rw), t(rl)
    inside, loss, acc_off, acc_half = official_dpo(lw, ll, rw, rl, beta)
    beta_d = beta / 2
    return {
        "name": name,
        "dtype": "f64" if dtype == torch.float64 else "f32",
        "beta": beta,
        "lw": lw.tolist(), "ll": ll.tolist(), "rw": rw.tolist(), "rl": rl.tolist(),
        "inside": inside.tolist(),
        "dpo": loss.item(),
        "dpoDiffusersHalfBeta": diffusers_dpo(lw, ll, rw, rl, beta_d).item(),
        "implicitAccOfficial": acc_off.item(),
        "implicitAcc": acc_half.item(),
        "policyMse": (0.5 * (lw.mean() + ll.mean())).item(),
        "referenceMse": (0.5 * (rw.mean() + rl.mean())).item(),
        "margin": ((lw - ll) - (rw - rl)).mean().item(),
        "sft": lw.mean().item(),
        "hinge": hinge(lw, ll, rw, rl, beta_d).item(),
        "ipo": ipo(lw, ll, rw, rl, beta_d).item(),
        "mapo": mapo(lw, ll, 0.1, 0.2, 1000).item(),
        "mapoOpts": {"weight": 0.1, "snrValue": 0.2, "numTrainTimesteps": 1000},
    }


def f32(values):
    """Round to float32 so the stored numbers are exactly what a Float32Array holds."""
    return np.asarray(values, dtype=np.float32).astype(np.float64).tolist()


def main():
    rng = np.random.default_rng(20231120)
    cases = []
    # Realistic magnitudes: per-sample errors ~0.1, model-vs-reference shifts ~1e-4.
    n = 8
    rw = 0.05 + 0.1 * rng.random(n)
    rl = 0.05 + 0.1 * rng.random(n)
    lw = rw + 2e-4 * rng.standard_normal(n)
    ll = rl + 2e-4 * rng.standard_normal(n)
    for beta in (5000.0, 2000.0, 500.0):
        cases.append(errors_case(f"random-f64-beta{int(beta)}", lw.tolist(), ll.tolist(), rw.tolist(), rl.tolist(), beta, torch.float64))
    cases.append(errors_case("random-f32-beta5000", f32(lw), f32(ll), f32(rw), f32(rl), 5000.0, torch.float32))
    # Ties: pair 0 and 2 have margin exactly 0 (policy errors equal the reference's).
    tw = [0.1, 0.2, 0.3, 0.4]
    tl = [0.15, 0.1, 0.35, 0.3]
    cases.append(errors_case("ties", f32(tw), f32([0.15, 0.1 + 1e-3, 0.35, 0.3 - 1e-3]), f32(tw), f32(tl), 5000.0, torch.float64))
    # Larger margins: losses far from ln 2 on both sides.
    cases.append(errors_case("large-margins", [0.1, 0.1, 0.2], [0.2, 0.05, 0.2], [0.15, 0.1, 0.25], [0.15, 0.1, 0.2], 50.0, torch.float64))

    # A full pass: predictions and targets [2N, C, H, W] in float64, layout [chosen..., rejected...].
    N, C, H, W = 3, 4, 5, 6
    target = rng.standard_normal((2 * N, C, H, W))
    pred = target + 0.3 * rng.standard_normal((2 * N, C, H, W))
    ref_pred = target + 0.3 * rng.standard_normal((2 * N, C, H, W))
    tt, tp, trp = torch.tensor(target), torch.tensor(pred), torch.tensor(ref_pred)
    model_losses = F.mse_loss(tp, tt, reduction="none").mean(dim=list(range(1, 4)))
    ref_losses = F.mse_loss(trp, tt, reduction="none").mean(dim=list(range(1, 4)))
    mlw, mll = model_losses.chunk(2)
    rlw, rll = ref_losses.chunk(2)
    inside, loss, acc_off, acc_half = official_dpo(mlw, mll, rlw, rll, 5000.0)
    full = {
        "shape": [2 * N, C, H, W],
        "target": target.ravel().tolist(),
        "pred": pred.ravel().tolist(),
        "refPred": ref_pred.ravel().tolist(),
        "beta": 5000.0,
        "lw": mlw.tolist(), "ll": mll.tolist(), "rw": rlw.tolist(), "rl": rll.tolist(),
        "dpo": loss.item(),
        "implicitAcc": acc_half.item(),
    }
    # Gradient of the DPO loss w.r.t. the policy's per-sample errors (autograd in torch).
    glw = mlw.clone().requires_grad_(True)
    gll = mll.clone().requires_grad_(True)
    _, gl, _, _ = official_dpo(glw, gll, rlw, rll, 5000.0)
    gl.backward()
    full["gradLw"] = glw.grad.tolist()
    full["gradLl"] = gll.grad.tolist()

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases, "full": full}, f)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
