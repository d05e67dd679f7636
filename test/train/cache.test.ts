// The training cache (src/train/cache.ts) on the tiny SDXL reference model: what it stores equals
// what the live VAE and text encoders compute, and a DPO step on cached latents and prompt
// encodings gives the step on pixels and prompts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brightJsonl } from "../cli/train-fixture.js";
import { referenceCase, relativeError } from "../_reference.js";
import { JsonlSource } from "../../src/data/jsonl.js";
import { PreferenceLoader, type PreferenceBatch } from "../../src/data/loader.js";
import { disposeTextToImageModel, encodePrompts, loadModelFolder } from "../../src/models/pipeline.js";
import { CachedPairSource, TrainingCache, isTrainingCache, writeTrainingCache } from "../../src/train/cache.js";
import { dpoStep, type PairMicroConditioning, type StepModels } from "../../src/train/dpo-step.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { Generator, noGrad, tensor, tidy } from "../../src/tensor/index.js";

const dir = mkdtempSync(join(tmpdir(), "dpo-cache-"));
const folder = referenceCase("sdxl-pipeline").pipelineFolder();
const model = loadModelFolder(folder);
test.after(() => {
  disposeTextToImageModel(model);
  rmSync(dir, { recursive: true, force: true });
  rmSync(folder, { recursive: true, force: true });
});

const cacheDir = join(dir, "cache");
const batches: PreferenceBatch[] = [];
const flat = (t: { toFloat32Array(): Float32Array }) => Array.from(t.toFloat32Array());

test("writeTrainingCache: 5 pairs in chunks of 2 (three latents files, prompts incl. the empty one)", async () => {
  const pairs = await brightJsonl(join(dir, "data"), 5, 64);
  const loader = new PreferenceLoader(new JsonlSource(pairs), {
    batchSize: 2, augment: { resolution: 64, flip: false }, seed: 0, workers: 0, shuffle: false, dropLast: false,
  });
  async function* recorded() {
    for await (const b of loader.batches(1)) { batches.push(b); yield b; }
  }
  const m = await writeTrainingCache({ model, modelPath: folder, batches: recorded(), dir: cacheDir, resolution: 64, chunkSize: 2 });
  assert.equal(isTrainingCache(cacheDir), true);
  assert.deepEqual([m.pairs, m.prompts, m.sdxl, m.latentShape], [5, 6, true, [4, 8, 8]]);
  assert.deepEqual(readdirSync(cacheDir).filter((f) => f.startsWith("latents-")).length, 3);
  await assert.rejects(writeTrainingCache({ model, modelPath: folder, batches: recorded(), dir: cacheDir, resolution: 64 }), /is not empty/);
});

test("the cache holds the VAE latents (posterior mean) and the prompt encodings the live model computes", () => {
  const cache = new TrainingCache(cacheDir);
  try {
    noGrad(() => tidy(() => {
      const b = batches[0]!;
      const live = model.vae!.encodeLatents(tensor(b.pixels, b.shape));
      assert.deepEqual(flat(cache.latents([0, 1])), flat(live)); // the same batch through the same code: equal
      const micro: PairMicroConditioning[] = [
        { originalSize: [100, 80], cropTopLeft: [3, 4], targetSize: [64, 64] },
        { originalSize: [64, 64], cropTopLeft: [0, 0], targetSize: [64, 64] },
      ];
      const prompts = [b.prompts[1]!, ""];
      const ours = cache.encodePrompts(prompts, micro);
      const want = encodePrompts(model, prompts, { micro });
      const err = relativeError(flat(ours), flat(want));
      process.stdout.write(`# cached prompt encoding: relative error ${err}\n`);
      assert.ok(err <= 1e-6, `cached prompt encoding ${err}`); // measured 0 (encoded in another batch: may differ in the last bits)
      assert.throws(() => cache.encodePrompts(["never seen"]), /is not in the cache/);
    }));
  } finally {
    cache.close();
  }
});

test("a DPO step on the cache equals the step on pixels and prompts (same draws)", () => {
  const cache = new TrainingCache(cacheDir);
  try {
    const schedule = new NoiseSchedule(model.scheduler);
    const unet = (x: Parameters<typeof model.unet.forward>[0], t: Parameters<typeof model.unet.forward>[1], c: Parameters<typeof model.unet.forward>[2]) =>
      model.unet.forward(x, t, c);
    const opts = { method: "dpo" as const, beta: 5000, schedule, predictionType: "epsilon" as const, promptDropout: 0.5, lossScale: 1 };
    const b = batches[0]!;
    const micro = b.geometry.map((g) => ({ ...g, targetSize: [64, 64] as [number, number] }));
    const live: StepModels = { policy: unet, reference: unet, encodePrompts: (p, m) => encodePrompts(model, p, { micro: m }), encodeImages: (px) => model.vae!.encodeLatents(px) };
    const cached: StepModels = { policy: unet, reference: unet, encodePrompts: (p, m) => cache.encodePrompts(p, m) };
    const pixels = tensor(b.pixels, b.shape);
    const a = dpoStep(live, { prompts: b.prompts, pixels, micro }, new Generator(3), opts);
    pixels.dispose();
    const latents = cache.latents([0, 1]);
    const c = dpoStep(cached, { prompts: b.prompts, pixels: latents, micro }, new Generator(3), opts);
    latents.dispose();
    assert.deepEqual(c.timesteps, a.timesteps);
    assert.equal(c.promptsDropped, a.promptsDropped);
    const rel = Math.abs(c.policyMse - a.policyMse) / a.policyMse;
    process.stdout.write(`# policy MSE cached vs live: relative difference ${rel}\n`);
    assert.ok(rel <= 1e-6, `policy MSE ${c.policyMse} vs ${a.policyMse}`); // measured 0
    model.unet.zeroGrad();
  } finally {
    cache.close();
  }
});

test("CachedPairSource: seeded epochs of whole batches, latents in place of pixels, micro-conditioning per pair", () => {
  const cache = new TrainingCache(cacheDir);
  try {
    const source = new CachedPairSource(cache, 2, 7);
    assert.equal(source.batchesPerEpoch, 2);
    const first = source.batch(0);
    const again = source.batch(0);
    assert.deepEqual(first.prompts, again.prompts);
    assert.deepEqual(first.pixels.shape, [4, 4, 8, 8]);
    assert.deepEqual(flat(first.pixels), flat(again.pixels));
    assert.deepEqual(first.micro![0], { originalSize: [64, 64], cropTopLeft: [0, 0], targetSize: [64, 64] });
    const seen = new Set([...source.batch(0).prompts, ...source.batch(1).prompts]);
    assert.equal(seen.size, 4, "an epoch holds 4 distinct pairs of the 5 (the last partial batch is dropped)");
    for (const b of [first, again]) b.pixels.dispose();
  } finally {
    cache.close();
  }
});
