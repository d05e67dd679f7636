import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, cat, noGrad, tensor, tidy, type Tensor } from "../../src/tensor/index.js";
import { PREFERENCE_METHODS } from "../../src/losses/preference.js";
import { adaptersOffReference, denoiserOf, dpoStep, type StepOptions } from "../../src/train/dpo-step.js";
import { noiseAndTarget, scaledLinearSchedule } from "../../src/train/noising.js";
import { TinyDenoiser, brightPairs, encodePrompts, pairBatch } from "./tiny.js";

const schedule = scaledLinearSchedule(1000);
const baseOpts: StepOptions = { method: "dpo", schedule, predictionType: "epsilon", promptDropout: 0.2, lossScale: 1, beta: 5000 };

test("schedule and noising closed forms (SD1.5 scaled-linear, ε and v targets)", () => {
  // ᾱ_0 = 1 − β_0 = 1 − 0.00085; ᾱ_1 = ᾱ_0·(1 − β_1), β_1 = (√0.00085 + (√0.012 − √0.00085)/999)²
  assert.ok(Math.abs(schedule.sqrtAlphasCumprod[0]! ** 2 - (1 - 0.00085)) < 1e-15);
  const b1 = (Math.sqrt(0.00085) + (Math.sqrt(0.012) - Math.sqrt(0.00085)) / 999) ** 2;
  assert.ok(Math.abs(schedule.sqrtAlphasCumprod[1]! ** 2 - (1 - 0.00085) * (1 - b1)) < 1e-15);
  assert.ok(Math.abs(schedule.sqrtOneMinusAlphasCumprod[999]! ** 2 + schedule.sqrtAlphasCumprod[999]! ** 2 - 1) < 1e-15);
  tidy(() => {
    const x0 = tensor([1, -0.5], [2, 1, 1, 1]);
    const eps = tensor([2, 3], [2, 1, 1, 1]);
    const t = [10, 900];
    const a = t.map((v) => schedule.sqrtAlphasCumprod[v]!);
    const s = t.map((v) => schedule.sqrtOneMinusAlphasCumprod[v]!);
    const e = noiseAndTarget(schedule, "epsilon", x0, eps, t);
    const v = noiseAndTarget(schedule, "v_prediction", x0, eps, t);
    const xs = e.noisy.toArray();
    const vs = v.target.toArray();
    assert.deepEqual(e.target.toArray(), [2, 3]);
    [1, -0.5].forEach((x, i) => {
      assert.ok(Math.abs(xs[i]! - (a[i]! * x + s[i]! * [2, 3][i]!)) < 1e-6);
      assert.ok(Math.abs(vs[i]! - (a[i]! * [2, 3][i]! - s[i]! * x)) < 1e-6);
    });
  });
});

test("chosen and rejected of a pair share t, ε and conditioning; dropout drops whole pairs", () => {
  tidy(() => {
    const seen: { x: number[]; t: number[]; c: number[]; shape: number[] }[] = [];
    const w = tensor([0.5]).setRequiresGrad(true);
    const recorder = (x: Tensor, t: Tensor, c: Tensor): Tensor => {
      seen.push({ x: x.toArray(), t: t.toArray(), c: c.toArray(), shape: x.shape });
      return x.mul(w);
    };
    const n = 3;
    // identical chosen and rejected images: then x_t of the two halves must be identical
    const same = tensor(Array.from({ length: n * 3 * 4 * 4 }, (_, i) => Math.sin(i)), [n, 3, 4, 4]);
    const batch = { prompts: ["a", "b", "c"], pixels: cat([same, same], 0) };
    const prompted: string[][] = [];
    const enc = (p: string[]) => {
      prompted.push(p);
      return encodePrompts(p);
    };
    dpoStep({ policy: recorder, reference: recorder, encodePrompts: enc }, batch, new Generator(1), { ...baseOpts, promptDropout: 0.5 });
    assert.equal(seen.length, 2);
    const half = (arr: number[], k: 0 | 1) => arr.slice((k * arr.length) / 2, ((k + 1) * arr.length) / 2);
    for (const s of seen) {
      assert.deepEqual(s.shape, [6, 3, 4, 4]);
      assert.deepEqual(half(s.t, 0), half(s.t, 1));
      assert.deepEqual(half(s.x, 0), half(s.x, 1));
      assert.deepEqual(half(s.c, 0), half(s.c, 1));
    }
    assert.equal(new Set(half(seen[0]!.t, 0)).size > 1, true, "different pairs draw different t");
    assert.equal(prompted.length, 1, "the text encoder runs once per step; both passes share its output");
    // p = 1 drops every prompt; p = 0 none
    const all: string[][] = [];
    dpoStep({ policy: recorder, encodePrompts: (p) => (all.push(p), encodePrompts(p)) }, batch, new Generator(2), { ...baseOpts, method: "sft", promptDropout: 1 });
    dpoStep({ policy: recorder, encodePrompts: (p) => (all.push(p), encodePrompts(p)) }, batch, new Generator(2), { ...baseOpts, method: "sft", promptDropout: 0 });
    assert.deepEqual(all, [["", "", ""], ["a", "b", "c"]]);
  });
});


test("at initialisation (policy = reference) the DPO loss is exactly ln 2 and implicitAcc ½", () => {
  tidy(() => {
    const model = new TinyDenoiser(3, 8, 3);
    const ref = model.deepCopy().requiresGrad(false);
    const data = brightPairs(4, 8, 5);
    const r = dpoStep(
      { policy: denoiserOf(model), reference: denoiserOf(ref), encodePrompts },
      pairBatch(data, [0, 1, 2, 3]), new Generator(0), baseOpts,
    );
    assert.ok(Math.abs(r.loss - Math.LN2) < 1e-7, `loss ${r.loss}`);
    assert.equal(r.implicitAcc, 0.5);
    assert.equal(r.margin, 0);
    assert.ok(Math.abs(r.policyMse - r.referenceMse) < 1e-7);
    model.dispose();
    ref.dispose();
  });
});

test("a small step along −∇ lowers the loss on the batch (every method), the reference gets no gradient", () => {
  for (const method of PREFERENCE_METHODS) {
    tidy(() => {
      const model = new TinyDenoiser(3, 8, 4);
      const ref = model.deepCopy().requiresGrad(false);
      const data = brightPairs(4, 8, 6);
      const batch = pairBatch(data, [0, 1, 2, 3]);
      // make policy ≠ reference so every method has a non-trivial gradient
      noGrad(() => { for (const p of model.parameters()) p.add_(p.mul(0.05)); });
      const models = { policy: denoiserOf(model), reference: denoiserOf(ref), encodePrompts };
      const opts = { ...baseOpts, method, beta: 500 };
      const before = dpoStep(models, batch, new Generator(11), opts);
      assert.ok(before.finite, `${method}: finite loss`);
      const params = model.parameters();
      let g2 = 0;
      for (const p of params) g2 += p.grad!.square().sum().item();
      assert.ok(g2 > 0, `${method}: non-zero gradient`);
      for (const p of ref.parameters()) assert.equal(p.grad, null, `${method}: reference has no gradient`);
      const lr = 1e-3 / Math.sqrt(g2);
      noGrad(() => { for (const p of params) p.add_(p.grad!, -lr); });
      model.zeroGrad();
      const after = dpoStep(models, batch, new Generator(11), opts);
      assert.ok(after.loss < before.loss, `${method}: ${after.loss} < ${before.loss}`);
      model.dispose();
      ref.dispose();
    });
  }
});

test("LoRA-style reference: adapters are switched off for the reference call and back on after", () => {
  tidy(() => {
    const model = new TinyDenoiser(3, 8, 7);
    let enabled = true;
    const calls: boolean[] = [];
    const policy = (x: Tensor, t: Tensor, c: Tensor) => {
      calls.push(enabled);
      return model.forward(x, t, c).mul(enabled ? 1.01 : 1);
    };
    const reference = adaptersOffReference(policy, (on) => { enabled = on; });
    const data = brightPairs(2, 8, 8);
    const r = dpoStep({ policy, reference, encodePrompts }, pairBatch(data, [0, 1]), new Generator(3), baseOpts);
    assert.deepEqual(calls, [true, false]);
    assert.equal(enabled, true);
    assert.ok(r.finite && r.loss !== Math.LN2);
    model.dispose();
  });
});

test("a malformed batch is rejected with a message naming the expected layout", () => {
  tidy(() => {
    const model = new TinyDenoiser(3, 8, 7);
    const bad = { prompts: ["a", "b"], pixels: tensor(new Float32Array(3 * 3 * 4 * 4), [3, 3, 4, 4]) };
    assert.throws(() => dpoStep({ policy: denoiserOf(model), encodePrompts }, bad, new Generator(0), baseOpts), /\[4, C, H, W\] laid out \[chosen…, rejected…\]/);
    model.dispose();
  });
});
