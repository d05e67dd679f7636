import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Generator, randn, type Tensor } from "../../src/tensor/index.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import { denoiserOf } from "../../src/train/dpo-step.js";
import { implicitRewardAccuracy } from "../../src/eval/implicit.js";
import { TinyDenoiser, brightPairs, encodePrompts, pairBatch } from "../train/tiny.js";

const schedule = new NoiseSchedule();

function batchesOf(p: { prompts: string[]; chosen: Tensor; rejected: Tensor }, size: number) {
  const out = [];
  for (let i = 0; i < p.prompts.length; i += size) out.push(pairBatch(p, Array.from({ length: Math.min(size, p.prompts.length - i) }, (_, j) => i + j)));
  return out;
}

test("model = reference: every pair ties (inside exactly 0), accuracy ½", async () => {
  const model = new TinyDenoiser(3, 8, 0);
  const d = denoiserOf(model);
  const r = await implicitRewardAccuracy(batchesOf(brightPairs(6, 8, 1), 4), { policy: d, reference: d, encodePrompts, schedule, draws: 2 });
  assert.equal(r.pairs, 6);
  assert.equal(r.ties, 6);
  assert.equal(r.accuracy, 0.5);
  assert.deepEqual(r.insides, [0, 0, 0, 0, 0, 0]);
  assert.deepEqual(r.interval, [0, 1]);
  model.dispose();
});

test("a different but untrained model on exchangeable pairs: accuracy ½ ± binomial noise", async () => {
  // chosen and rejected drawn i.i.d.: no model can prefer the chosen one systematically
  const n = 64;
  const gen = new Generator(11);
  const pairs = {
    prompts: Array.from({ length: n }, (_, i) => `pair ${i}`),
    chosen: randn([n, 3, 8, 8], gen).mul(0.5).clamp(-1, 1),
    rejected: randn([n, 3, 8, 8], gen).mul(0.5).clamp(-1, 1),
  };
  const a = new TinyDenoiser(3, 8, 1);
  const b = new TinyDenoiser(3, 8, 2);
  const r = await implicitRewardAccuracy(batchesOf(pairs, 32), { policy: denoiserOf(a), reference: denoiserOf(b), encodePrompts, schedule, draws: 4, seed: 3 });
  const sd = Math.sqrt(0.25 / n);
  assert.equal(r.ties, 0);
  assert.ok(Math.abs(r.accuracy - 0.5) < 3 * sd, `accuracy ${r.accuracy} within 3σ = ${3 * sd} of ½`);
  assert.ok(r.interval[0] < 0.5 && r.interval[1] > 0.5, `Wilson interval ${r.interval} covers ½`);
  a.dispose();
  b.dispose();
});

test("rises on held-out pairs after DPO training on the brighter-chosen example", async () => {
  const model = new TinyDenoiser(3, 16, 0);
  const reference = model.deepCopy().requiresGrad(false).eval();
  const data = new TensorPairSource(brightPairs(8, 8, 42), 4, 1);
  const config = loadTrainConfig({
    flags: {
      seed: 1, batchSize: 4, maxSteps: 40, learningRate: 3e-4, scaleLr: false, warmupSteps: 0, lrSchedule: "constant",
      checkpointEvery: 0, beta: 2000, outputDir: mkdtempSync(join(tmpdir(), "dpo-eval-implicit-")),
    },
  });
  const trainer = new DpoTrainer({ config, model, encodePrompts, schedule, data });
  await trainer.run();
  const heldOut = brightPairs(24, 8, 7); // different seed: images never seen in training
  const opts = { policy: denoiserOf(model), reference: denoiserOf(reference), encodePrompts, schedule, beta: 2000, seed: 5 };
  const before = await implicitRewardAccuracy(batchesOf(heldOut, 12), { ...opts, policy: denoiserOf(reference) });
  const after = await implicitRewardAccuracy(batchesOf(heldOut, 12), opts);
  assert.equal(before.accuracy, 0.5);
  assert.equal(after.pairs, 24);
  assert.equal(after.draws, 10);
  assert.ok(after.accuracy >= 0.8, `held-out implicit accuracy after training ${after.accuracy}`);
  assert.ok(after.meanInside > 0, `mean inside ${after.meanInside}`);
  // seeded: the same call gives the same numbers
  const again = await implicitRewardAccuracy(batchesOf(heldOut, 12), opts);
  assert.deepEqual(again.insides, after.insides);
  // swapping chosen and rejected flips the verdicts
  const swapped = await implicitRewardAccuracy(batchesOf({ ...heldOut, chosen: heldOut.rejected, rejected: heldOut.chosen }, 12), opts);
  assert.ok(Math.abs(swapped.accuracy - (1 - after.accuracy)) < 1e-12, `swapped ${swapped.accuracy}`);
  trainer.dispose();
  model.dispose();
  reference.dispose();
  data.dispose();
});
