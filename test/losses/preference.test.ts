import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { scalar, tensor, tidy, type DType, type Tensor } from "../../src/tensor/index.js";
import {
  PREFERENCE_METHODS,
  betaFromDiffusers,
  betaToDiffusers,
  implicitAccuracy,
  methodNeedsReference,
  perSampleErrors,
  preferenceLoss,
  type PreferenceMethod,
} from "../../src/losses/preference.js";

interface ErrCase {
  name: string; dtype: "f32" | "f64"; beta: number;
  lw: number[]; ll: number[]; rw: number[]; rl: number[]; inside: number[];
  dpo: number; dpoDiffusersHalfBeta: number; implicitAccOfficial: number; implicitAcc: number;
  policyMse: number; referenceMse: number; margin: number;
  sft: number; hinge: number; ipo: number; mapo: number;
  mapoOpts: { weight: number; snrValue: number; numTrainTimesteps: number };
}
interface FullCase {
  shape: number[]; target: number[]; pred: number[]; refPred: number[]; beta: number;
  lw: number[]; ll: number[]; rw: number[]; rl: number[]; dpo: number; implicitAcc: number;
  gradLw: number[]; gradLl: number[];
}
const golden = JSON.parse(readFileSync("test/golden/losses/preference.json", "utf8")) as { cases: ErrCase[]; full: FullCase };

const t = (v: number[], dtype: DType = "f64"): Tensor => tensor(v, [v.length], { dtype });
const close = (a: number, b: number, tol: number, what: string): void => {
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (|Δ| = ${Math.abs(a - b)} > ${tol})`);
};

function inputs(c: ErrCase) {
  return {
    policy: { lw: t(c.lw, c.dtype), ll: t(c.ll, c.dtype) },
    reference: { rw: t(c.rw, c.dtype), rl: t(c.rl, c.dtype) },
    beta: c.beta,
    mapo: c.mapoOpts,
  };
}

test("every method matches the PyTorch transcription of its published formula (golden)", () => {
  for (const c of golden.cases) {
    tidy(() => {
      const tol = c.dtype === "f64" ? 1e-9 : 1e-6;
      for (const method of PREFERENCE_METHODS) {
        // MaPO's sL/(e^{sL} − 1) loses ~3 digits to cancellation in float32 (the golden uses
        // exp − 1, we use expm1): compared in float64 only.
        if (method === "mapo" && c.dtype === "f32") continue;
        const r = preferenceLoss(method, inputs(c));
        const expected = c[method];
        const scale = Math.max(1, Math.abs(expected));
        close(r.loss.item(), expected, tol * scale, `${c.name} ${method}`);
      }
      const r = preferenceLoss("dpo", inputs(c));
      const m = r.metrics;
      close(m.implicitAcc!.item(), c.implicitAcc, 1e-7, `${c.name} implicitAcc`);
      close(m.policyMse.item(), c.policyMse, tol, `${c.name} policyMse`);
      close(m.referenceMse!.item(), c.referenceMse, tol, `${c.name} referenceMse`);
      close(m.margin!.item(), c.margin, tol, `${c.name} margin`);
      const inside = r.insidePerPair!.toArray();
      inside.forEach((v, i) => close(v, c.inside[i]!, tol * Math.max(1, Math.abs(c.inside[i]!)), `${c.name} inside[${i}]`));
    });
  }
});

test("ties count ½ in implicitAcc; the official count ignores them", () => {
  const c = golden.cases.find((x) => x.name === "ties")!;
  const zeros = c.inside.filter((v) => v === 0).length;
  assert.equal(zeros, 2, "the golden 'ties' case has two exact ties");
  tidy(() => {
    const acc = implicitAccuracy(t(c.inside)).item();
    close(acc, c.implicitAccOfficial + (0.5 * zeros) / c.inside.length, 1e-7, "ties");
    close(acc, c.implicitAcc, 1e-7, "ties vs golden");
    assert.equal(implicitAccuracy(t([1, -1, 0, 2])).item(), (2 + 0.5) / 4);
  });
});

test("the official −½β form equals diffusers' form at half β", () => {
  assert.equal(betaFromDiffusers(2500), 5000);
  assert.equal(betaToDiffusers(5000), 2500);
  for (const c of golden.cases) {
    if (c.dtype !== "f64") continue;
    tidy(() => {
      const r = preferenceLoss("dpo", { ...inputs(c), beta: betaFromDiffusers(betaToDiffusers(c.beta)) });
      close(r.loss.item(), c.dpoDiffusersHalfBeta, 1e-9, c.name);
    });
  }
});

test("zero margin gives ln 2 for any β; large margins give 0 or a loss linear in the margin", () => {
  tidy(() => {
    const lw = t([0.1, 0.2, 0.3]);
    const ll = t([0.3, 0.1, 0.25]);
    for (const beta of [1, 2500, 5000, 1e6]) {
      const r = preferenceLoss("dpo", { policy: { lw, ll }, reference: { rw: lw, rl: ll }, beta });
      close(r.loss.item(), Math.LN2, 1e-12, `ln 2 at beta ${beta}`);
      assert.equal(r.metrics.implicitAcc!.item(), 0.5);
    }
    // policy improved a lot on every pair: margin −0.1, inside = +β/2·0.1 = 250 → loss ≈ e^-250 ≈ 0
    const good = preferenceLoss("dpo", { policy: { lw: lw.sub(0.05), ll: ll.add(0.05) }, reference: { rw: lw, rl: ll }, beta: 5000 });
    assert.ok(good.loss.item() < 1e-100 && good.loss.item() >= 0);
    assert.equal(good.metrics.implicitAcc!.item(), 1);
    // the opposite: −log σ(−250) = 250 (to double precision), no overflow
    const bad = preferenceLoss("dpo", { policy: { lw: lw.add(0.05), ll: ll.sub(0.05) }, reference: { rw: lw, rl: ll }, beta: 5000 });
    close(bad.loss.item(), 250, 1e-9, "large negative inside");
    assert.equal(bad.metrics.implicitAcc!.item(), 0);
  });
});

test("perSampleErrors averages over C, H, W and splits [chosen…, rejected…] (golden full pass)", () => {
  const f = golden.full;
  tidy(() => {
    const target = tensor(f.target, f.shape, { dtype: "f64" });
    const pred = tensor(f.pred, f.shape, { dtype: "f64" });
    const refPred = tensor(f.refPred, f.shape, { dtype: "f64" });
    const policy = perSampleErrors(pred, target);
    const ref = perSampleErrors(refPred, target);
    assert.equal(policy.lw.dtype, "f64");
    policy.lw.toArray().forEach((v, i) => close(v, f.lw[i]!, 1e-12, `lw[${i}]`));
    policy.ll.toArray().forEach((v, i) => close(v, f.ll[i]!, 1e-12, `ll[${i}]`));
    ref.lw.toArray().forEach((v, i) => close(v, f.rw[i]!, 1e-12, `rw[${i}]`));
    const r = preferenceLoss("dpo", { policy, reference: { rw: ref.lw, rl: ref.ll }, beta: f.beta });
    close(r.loss.item(), f.dpo, 1e-9 * Math.abs(f.dpo), "full-pass dpo");
    close(r.metrics.implicitAcc!.item(), f.implicitAcc, 1e-7, "full-pass implicitAcc");
    // f32 predictions are computed in f32
    const p32 = perSampleErrors(pred.float(), target.float());
    assert.equal(p32.lw.dtype, "f32");
    p32.lw.toArray().forEach((v, i) => close(v, f.lw[i]!, 1e-5 * f.lw[i]!, `f32 lw[${i}]`));
  });
});

test("autograd gradient of the DPO loss w.r.t. the policy errors matches torch and finite differences", () => {
  const f = golden.full;
  tidy(() => {
    const lw = t(f.lw).setRequiresGrad(true);
    const ll = t(f.ll).setRequiresGrad(true);
    const ref = { rw: t(f.rw), rl: t(f.rl) };
    const r = preferenceLoss("dpo", { policy: { lw, ll }, reference: ref, beta: f.beta });
    r.loss.backward();
    const glw = lw.grad!.toArray();
    const gll = ll.grad!.toArray();
    glw.forEach((v, i) => close(v, f.gradLw[i]!, 1e-9 * Math.max(1, Math.abs(f.gradLw[i]!)), `dL/dlw[${i}]`));
    gll.forEach((v, i) => close(v, f.gradLl[i]!, 1e-9 * Math.max(1, Math.abs(f.gradLl[i]!)), `dL/dll[${i}]`));
    // central differences on every method, in float64
    const c = golden.cases[0]!;
    for (const method of PREFERENCE_METHODS) {
      const base = inputs(c);
      const lwv = base.policy.lw.clone().setRequiresGrad(true);
      const res = preferenceLoss(method, { ...base, policy: { lw: lwv, ll: base.policy.ll } });
      res.loss.backward();
      const g = lwv.grad!.toArray();
      const h = 1e-7;
      for (let i = 0; i < 3; i++) {
        const bump = (d: number): number => {
          const v = [...c.lw];
          v[i] = v[i]! + d;
          return preferenceLoss(method, { ...base, policy: { lw: t(v), ll: base.policy.ll } }).loss.item();
        };
        const fd = (bump(h) - bump(-h)) / (2 * h);
        close(g[i]!, fd, 1e-5 * Math.max(1, Math.abs(fd)), `${method} dL/dlw[${i}]`);
      }
    }
  });
});

test("reference-needing methods refuse to run without the reference; sft and mapo run without it", () => {
  tidy(() => {
    const policy = { lw: t([0.1, 0.2]), ll: t([0.2, 0.1]) };
    for (const method of PREFERENCE_METHODS) {
      if (methodNeedsReference(method)) {
        assert.throws(() => preferenceLoss(method, { policy }), new RegExp(`"${method}" needs the reference`));
      } else {
        const r = preferenceLoss(method, { policy });
        assert.ok(Number.isFinite(r.loss.item()));
        assert.equal(r.metrics.implicitAcc, undefined);
      }
    }
    assert.throws(() => preferenceLoss("nope" as PreferenceMethod, { policy }), /unknown preference method "nope"/);
    assert.throws(() => preferenceLoss("dpo", { policy, reference: { rw: policy.lw, rl: policy.ll }, beta: 0 }), /beta must be a positive/);
    assert.throws(() => perSampleErrors(tensor([1, 2, 3], [3, 1]), tensor([1, 2, 3], [3, 1])), /2N samples/);
    assert.equal(scalar(1).item(), 1);
  });
});

test("sftWeight λ adds λ·L_w per pair to dpo, hinge and ipo (closed form, and its gradient λ/N on each L_w); sft and mapo refuse it", () => {
  tidy(() => {
    const c = golden.cases[0]!;
    const n = c.lw.length;
    for (const method of ["dpo", "hinge", "ipo"] as const) {
      for (const lambda of [0.5, 250]) {
        const plainLw = inputs(c).policy.lw.clone().setRequiresGrad(true);
        const plain = preferenceLoss(method, { ...inputs(c), policy: { lw: plainLw, ll: inputs(c).policy.ll } });
        plain.loss.backward();
        const mixedLw = inputs(c).policy.lw.clone().setRequiresGrad(true);
        const mixed = preferenceLoss(method, { ...inputs(c), policy: { lw: mixedLw, ll: inputs(c).policy.ll }, sftWeight: lambda });
        mixed.loss.backward();
        const meanLw = c.lw.reduce((a, v) => a + v, 0) / n;
        // float64 throughout: the only error is the summation order of the mean (≤ a few ulps)
        close(mixed.loss.item(), plain.loss.item() + lambda * meanLw, 1e-12 * Math.max(1, lambda), `${method} λ=${lambda} loss`);
        const pp = mixed.perPair.toArray();
        plain.perPair.toArray().forEach((v, i) => close(pp[i]!, v + lambda * c.lw[i]!, 1e-12 * Math.max(1, lambda), `${method} λ=${lambda} pair ${i}`));
        const gm = mixedLw.grad!.toArray();
        plainLw.grad!.toArray().forEach((g, i) => close(gm[i]!, g + lambda / n, 1e-12 * Math.max(1, lambda), `${method} λ=${lambda} dL/dlw[${i}]`));
        // the metrics describe the same errors as without the term
        close(mixed.metrics.implicitAcc!.item(), plain.metrics.implicitAcc!.item(), 0, `${method} implicitAcc`);
      }
      const zero = preferenceLoss(method, { ...inputs(c), sftWeight: 0 });
      close(zero.loss.item(), preferenceLoss(method, inputs(c)).loss.item(), 0, `${method} λ=0 is the plain loss`);
    }
    for (const method of ["sft", "mapo"] as const) {
      assert.throws(() => preferenceLoss(method, { ...inputs(c), sftWeight: 1 }), new RegExp(`"${method}" already trains on the chosen image`));
    }
    assert.throws(() => preferenceLoss("dpo", { ...inputs(c), sftWeight: -1 }), /sftWeight must be a non-negative number, got -1/);
  });
});
