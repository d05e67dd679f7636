import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, cat, getNumThreads, liveTensors, noGrad, overlapBackward, randint, randn, setNumThreads, tensor, tidy, type Tensor } from "../../src/tensor/index.js";
import { PREFERENCE_METHODS } from "../../src/losses/preference.js";
import { adaptersOffReference, balancedOverlapSplit, denoiserOf, dpoStep, prepareStep, type PreparedStep, type StepOptions, type StepResult } from "../../src/train/dpo-step.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { TinyDenoiser, brightPairs, encodePrompts, pairBatch } from "./tiny.js";

const schedule = new NoiseSchedule();
const baseOpts: StepOptions = { method: "dpo", schedule, predictionType: "epsilon", promptDropout: 0.2, lossScale: 1, beta: 5000 };

test("the step noises with √ᾱ_t·x0 + √(1−ᾱ_t)·ε and regresses ε or v (closed forms, SD1.5 schedule)", () => {
  tidy(() => {
    const n = 2;
    const shape = [n, 3, 4, 4];
    const chosen = tensor(Array.from({ length: 2 * 3 * 16 }, (_, i) => Math.cos(i) * 0.8), shape);
    const rejected = tensor(Array.from({ length: 2 * 3 * 16 }, (_, i) => Math.sin(3 * i) * 0.8), shape);
    const batch = { prompts: ["p", "q"], pixels: cat([chosen, rejected], 0) };
    const x0 = batch.pixels.toArray();
    // the generator's first draws, in the documented order: ε [N, C, H, W], then t [N]
    const g = new Generator(5);
    const eps = randn(shape, g).toArray();
    const ts = randint(0, 1000, [n], g).toArray();
    let seenX: number[] = [];
    const w = tensor([0]).setRequiresGrad(true);
    const zeroModel = (x: Tensor): Tensor => {
      seenX = x.toArray();
      return x.mul(w); // predicts 0: the per-sample error is then mean(target²)
    };
    const per = 3 * 16;
    // SD1.5's scaled-linear schedule from its definition: β_i = (√0.00085 + (√0.012 − √0.00085)·i/999)²
    const alphaBar: number[] = [];
    for (let i = 0, prod = 1; i < 1000; i++) {
      prod *= 1 - (Math.sqrt(0.00085) + ((Math.sqrt(0.012) - Math.sqrt(0.00085)) * i) / 999) ** 2;
      alphaBar.push(prod);
    }
    for (const predictionType of ["epsilon", "v_prediction"] as const) {
      const r = dpoStep({ policy: zeroModel, encodePrompts }, batch, new Generator(5), { ...baseOpts, method: "sft", predictionType });
      let expectedLoss = 0;
      for (let i = 0; i < 2 * n; i++) {
        const t = ts[i % n]!;
        const a = Math.sqrt(alphaBar[t]!);
        const s = Math.sqrt(1 - alphaBar[t]!);
        let err = 0;
        for (let k = 0; k < per; k++) {
          const e = eps[(i % n) * per + k]!; // the pair's shared noise
          const x = x0[i * per + k]!;
          assert.ok(Math.abs(seenX[i * per + k]! - (a * x + s * e)) < 1e-5, `x_t[${i}][${k}]`);
          const target = predictionType === "epsilon" ? e : a * e - s * x;
          err += target * target;
        }
        if (i < n) expectedLoss += err / per / n; // sft: mean over chosen samples
      }
      assert.ok(Math.abs(r.loss - expectedLoss) < 1e-5 * expectedLoss, `${predictionType}: ${r.loss} vs ${expectedLoss}`);
    }
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

test("sftWeight reaches the step: at initialisation the loss is ln 2 + λ·(the sft loss of the same draws)", () => {
  tidy(() => {
    const model = new TinyDenoiser(3, 8, 3);
    const ref = model.deepCopy().requiresGrad(false);
    const data = brightPairs(4, 8, 5);
    const models = { policy: denoiserOf(model), reference: denoiserOf(ref), encodePrompts };
    const step = (opts: Partial<StepOptions>) => dpoStep(models, pairBatch(data, [0, 1, 2, 3]), new Generator(3), { ...baseOpts, ...opts });
    const sft = step({ method: "sft" });
    const mixed = step({ sftWeight: 40 });
    assert.deepEqual(mixed.timesteps, sft.timesteps, "same generator seed, same draws");
    assert.ok(sft.loss > 0);
    // float32 errors: the mixed loss is ln 2 + 40·mean(L_w) up to f32 rounding of that sum
    assert.ok(Math.abs(mixed.loss - (Math.LN2 + 40 * sft.loss)) < 1e-5 * (1 + 40 * sft.loss), `${mixed.loss} vs ln 2 + 40·${sft.loss}`);
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

test("overlapBackward: the two-half step (first half's backward on a second thread) equals the one-pass step, every method", () => {
  const threads = getNumThreads();
  // the overlapped path needs ≥ 2 threads to split between the halves
  setNumThreads(2);
  try {
    for (const method of PREFERENCE_METHODS) {
      tidy(() => {
        const model = new TinyDenoiser(3, 8, 4);
        const ref = model.deepCopy().requiresGrad(false);
        noGrad(() => { for (const p of model.parameters()) p.add_(p.mul(0.05)); });
        const data = brightPairs(5, 8, 6);
        // 5 pairs: halves of 3 and 2
        const batch = pairBatch(data, [0, 1, 2, 3, 4]);
        const models = { policy: denoiserOf(model), reference: denoiserOf(ref), encodePrompts };
        const opts = { ...baseOpts, method, beta: 500, promptDropout: 0.4, lossScale: 0.5 };
        const grads = () => model.parameters().map((p) => p.grad!.toFloat32Array());
        const one = dpoStep(models, batch, new Generator(21), opts);
        const g1 = grads();
        model.zeroGrad();
        const two = dpoStep(models, batch, new Generator(21), { ...opts, overlapBackward: true });
        const g2 = grads();
        model.zeroGrad();
        assert.equal(two.overlapped, true, `${method}: the overlapped path ran`);
        assert.equal(one.overlapped, undefined);
        assert.deepEqual(two.timesteps, one.timesteps);
        assert.equal(two.promptsDropped, one.promptsDropped);
        assert.equal(two.finite, true);
        // float32 sums over 3 + 2 pairs instead of 5: equal to a few ulps
        for (const k of ["loss", "policyMse"] as const) assert.ok(Math.abs(two[k] - one[k]) <= 1e-6 * Math.abs(one[k]), `${method} ${k}: ${two[k]} vs ${one[k]}`);
        if (method !== "sft" && method !== "mapo") {
          assert.equal(two.implicitAcc, one.implicitAcc);
          assert.ok(Math.abs(two.margin - one.margin) <= 1e-6 * one.policyMse, `${method} margin ${two.margin} vs ${one.margin}`);
        }
        const scale = Math.max(...g1.map((g) => Math.max(...g.map(Math.abs))));
        assert.ok(scale > 0);
        let worst = 0;
        g1.forEach((g, i) => g.forEach((v, j) => { worst = Math.max(worst, Math.abs(g2[i]![j]! - v) / scale); }));
        // the weight gradients sum per-sample terms in another order (two backward passes): 1e-5 of
        // the largest entry bounds float32 reordering of these ≤ 10-term sums with a wide margin
        assert.ok(worst <= 1e-5, `${method}: gradients differ by ${worst} of the largest`);
        for (const p of ref.parameters()) assert.equal(p.grad, null, `${method}: the reference gets no gradient`);
        // the thread count this thread had is back
        assert.equal(getNumThreads(), 2);
        model.dispose();
        ref.dispose();
      });
    }
    // one pair, or one thread: the one-pass path
    tidy(() => {
      const model = new TinyDenoiser(3, 8, 4);
      const data = brightPairs(2, 8, 6);
      const models = { policy: denoiserOf(model), reference: denoiserOf(model.deepCopy().requiresGrad(false)), encodePrompts };
      assert.equal(dpoStep(models, pairBatch(data, [0]), new Generator(1), { ...baseOpts, overlapBackward: true }).overlapped, undefined);
      setNumThreads(1);
      assert.equal(dpoStep(models, pairBatch(data, [0, 1]), new Generator(1), { ...baseOpts, overlapBackward: true }).overlapped, undefined);
      model.dispose();
    });
  } finally {
    setNumThreads(threads);
  }
});

test("overlapBackward: an error in the background backward surfaces after the foreground, and the thread count is restored", () => {
  const threads = getNumThreads();
  setNumThreads(2);
  try {
    tidy(() => {
      const leaf = randn([3], new Generator(0)).setRequiresGrad(true);
      // a loss that is not a scalar: backward without a gradient is an error on the background thread
      const bad = leaf.mul(2);
      let ran = false;
      assert.throws(() => overlapBackward(bad, () => { ran = true; }), /scalar|grad can be implicitly created/);
      assert.ok(ran, "the foreground ran");
      assert.equal(getNumThreads(), 2);
      // and a good one lands its gradient
      overlapBackward(leaf.mul(3).sum(), () => 0);
      assert.deepEqual(Array.from(leaf.grad!.toFloat32Array()), [3, 3, 3]);
    });
  } finally {
    setNumThreads(threads);
  }
});

test("balancedOverlapSplit: the first part's share balances its backward against the second part's forwards", () => {
  // forwards F + R (R ≈ 0.8 F) against the backward B ≈ F with LoRA, ≈ 2F in full fine-tuning
  assert.ok(Math.abs(balancedOverlapSplit("lora", true) - 1.8 / 2.8) < 1e-12);
  assert.ok(Math.abs(balancedOverlapSplit("full", true) - 1.8 / 3.8) < 1e-12);
  assert.equal(balancedOverlapSplit("lora", false), 0.5);
  assert.ok(Math.abs(balancedOverlapSplit("full", false) - 1 / 3) < 1e-12);
  // the split reaches the step: 8 pairs at ⅝ put 5 in the first part, and the result is the one-pass step's
  const threads = getNumThreads();
  setNumThreads(2);
  try {
    tidy(() => {
      const model = new TinyDenoiser(3, 8, 4);
      const ref = model.deepCopy().requiresGrad(false);
      noGrad(() => { for (const p of model.parameters()) p.add_(p.mul(0.05)); });
      const data = brightPairs(8, 8, 6);
      const sizes: number[] = [];
      const policy = denoiserOf(model);
      const models = { policy: (x: Tensor, t: Tensor, c: Tensor) => { sizes.push(x.shape[0]!); return policy(x, t, c); }, reference: denoiserOf(ref), encodePrompts };
      const batch = pairBatch(data, [0, 1, 2, 3, 4, 5, 6, 7]);
      const one = dpoStep(models, batch, new Generator(2), baseOpts);
      const g1 = model.parameters().map((p) => p.grad!.toFloat32Array());
      model.zeroGrad();
      sizes.length = 0;
      const two = dpoStep(models, batch, new Generator(2), { ...baseOpts, overlapBackward: true, overlapSplit: 0.625 });
      assert.deepEqual(sizes, [10, 6], "5 pairs, then 3 (chosen and rejected rows)");
      assert.ok(Math.abs(two.loss - one.loss) <= 1e-6 * one.loss);
      const scale = Math.max(...g1.map((g) => Math.max(...g.map(Math.abs))));
      model.parameters().forEach((p, i) => p.grad!.toFloat32Array().forEach((v, j) => assert.ok(Math.abs(v - g1[i]![j]!) <= 1e-5 * scale)));
      model.dispose();
      ref.dispose();
    });
  } finally {
    setNumThreads(threads);
  }
});

test("pipelined steps (each prepares the next during its last backward) equal steps run one by one, every prefetch size", () => {
  const threads = getNumThreads();
  setNumThreads(2);
  try {
    const before = liveTensors();
    tidy(() => {
      const model = new TinyDenoiser(3, 8, 4);
      const ref = model.deepCopy().requiresGrad(false);
      noGrad(() => { for (const p of model.parameters()) p.add_(p.mul(0.05)); });
      const data = brightPairs(15, 8, 6);
      const batches = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]].map((ix) => pairBatch(data, ix));
      const refSizes: number[] = [];
      const refFn = denoiserOf(ref);
      const models = { policy: denoiserOf(model), reference: (x: Tensor, t: Tensor, c: Tensor) => { refSizes.push(x.shape[0]!); return refFn(x, t, c); }, encodePrompts };
      const grads = () => { const g = model.parameters().map((p) => p.grad!.toFloat32Array()); model.zeroGrad(); return g; };
      for (const overlap of [true, false]) {
        const opts: StepOptions = { ...baseOpts, beta: 500, promptDropout: 0.4, overlapBackward: overlap, overlapSplit: 0.6 };
        // one by one
        const gen1 = new Generator(21);
        const plain = batches.map((b) => { const r = dpoStep(models, b, gen1, opts); return { r, g: grads() }; });
        for (const prefetch of [0, 2, 3, 5]) {
          const gen2 = new Generator(21);
          const piped: { r: StepResult; g: Float32Array[] }[] = [];
          let input: typeof batches[number] | PreparedStep = batches[0]!;
          for (let i = 0; i < batches.length; i++) {
            const nextBatch = batches[i + 1];
            refSizes.length = 0;
            const r = dpoStep(models, input, gen2, { ...opts, ...(nextBatch !== undefined ? { prepareNext: () => prepareStep(models, nextBatch, gen2, opts, prefetch) } : {}) });
            piped.push({ r, g: grads() });
            // the reference ran on the pairs not prefetched (2 rows each), then on the next step's prefetched ones
            const own = i === 0 ? 5 : 5 - prefetch;
            const ahead = nextBatch !== undefined && prefetch > 0 ? [2 * prefetch] : [];
            const ownSizes = refSizes.slice(0, refSizes.length - ahead.length);
            assert.equal(ownSizes.reduce((a, b) => a + b, 0), 2 * own, `overlap ${overlap}, prefetch ${prefetch}, step ${i}: this step's reference rows`);
            assert.deepEqual(refSizes.slice(refSizes.length - ahead.length), ahead, `overlap ${overlap}, prefetch ${prefetch}, step ${i}: the next step's reference rows`);
            assert.equal(r.next !== undefined, nextBatch !== undefined);
            if (r.next !== undefined) input = r.next;
          }
          // the generator is where the one-by-one run left it
          assert.deepEqual(Array.from(gen2.getState()), Array.from(gen1.getState()), `overlap ${overlap}, prefetch ${prefetch}: generator state`);
          piped.forEach(({ r, g }, i) => {
            const { r: o, g: og } = plain[i]!;
            const what = `overlap ${overlap}, prefetch ${prefetch}, step ${i}`;
            assert.deepEqual(r.timesteps, o.timesteps, what);
            assert.equal(r.promptsDropped, o.promptsDropped, what);
            assert.equal(r.overlapped, o.overlapped, what);
            // the same draws and the same per-sample errors: the loss is the one-by-one loss up to float32 summation order
            assert.ok(Math.abs(r.loss - o.loss) <= 1e-6 * Math.abs(o.loss), `${what}: loss ${r.loss} vs ${o.loss}`);
            assert.equal(r.implicitAcc, o.implicitAcc, what);
            const scale = Math.max(...og.map((x) => Math.max(...x.map(Math.abs))));
            let worst = 0;
            og.forEach((x, a) => x.forEach((v, b) => { worst = Math.max(worst, Math.abs(g[a]![b]! - v) / scale); }));
            // as in the two-part test: ≤ 10-term float32 sums in another order
            assert.ok(worst <= 1e-5, `${what}: gradients differ by ${worst} of the largest`);
          });
        }
      }
      model.dispose();
      ref.dispose();
    });
    // prepared steps free their tensors once run
    assert.equal(liveTensors(), before, "no tensor outlives the steps");
  } finally {
    setNumThreads(threads);
  }
});

test("prepareStep refuses models without a reference and fixed draws, saying why", () => {
  tidy(() => {
    const model = new TinyDenoiser(3, 8, 4);
    const data = brightPairs(2, 8, 6);
    assert.throws(() => prepareStep({ policy: denoiserOf(model), encodePrompts }, pairBatch(data, [0, 1]), new Generator(1), baseOpts, 1), /no reference/);
    const models = { policy: denoiserOf(model), reference: denoiserOf(model), encodePrompts };
    const pairDraws = { draws: 2, keys: () => ["a", "b"], sample: () => { throw new Error("not drawn"); } };
    assert.throws(() => prepareStep(models, pairBatch(data, [0, 1]), new Generator(1), { ...baseOpts, pairDraws }, 1), /fixed pair draws or a reference cache/);
    model.dispose();
  });
});
