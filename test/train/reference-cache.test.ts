import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Generator, liveTensorBytes, tidy, type Tensor } from "../../src/tensor/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { denoiserOf, dpoStep, type StepOptions } from "../../src/train/dpo-step.js";
import { DpoTrainer, type DpoTrainerOptions } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import type { TrainEvent } from "../../src/train/events.js";
import {
  REFERENCE_CACHE_FILE,
  ReferenceCache,
  buildReferenceCache,
  fixedPairDraws,
  pairKeys,
  referenceCacheIdentity,
  sampleDraws,
} from "../../src/train/reference-cache.js";
import { TinyDenoiser, TinyLoraDenoiser, brightPairs, encodePrompts, pairBatch } from "./tiny.js";

const schedule = new NoiseSchedule();
const tmp = (): string => mkdtempSync(join(tmpdir(), "dpo-refcache-"));
const relErr = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);

test("a step on cached reference errors equals the step that runs the reference on the same draws", async () => {
  const dir = tmp();
  const pairs = brightPairs(6, 8, 5);
  const policy = new TinyDenoiser(3, 8, 11);
  const reference = new TinyDenoiser(3, 8, 11); // the same weights: a frozen copy
  const K = 4;
  const spec = { seed: 3, draws: K, schedule };
  // built in batches of 4 and 2; the steps below use other compositions
  const cache = await buildReferenceCache({
    ...spec, path: join(dir, REFERENCE_CACHE_FILE), identity: referenceCacheIdentity({
      draws: K, seed: 3, promptDropout: 0.5, predictionType: "epsilon", noising: "test", mixedPrecision: "no", reference: "test", data: "",
    }),
    pairs: [pairBatch(pairs, [0, 1, 2, 3]), pairBatch(pairs, [4, 5]), pairBatch(pairs, [1])], // pair 1 twice: skipped
    reference: denoiserOf(reference), encodePrompts, predictionType: "epsilon", promptDropout: 0.5,
  });
  assert.equal(cache.pairs, 6);
  assert.ok([...cache.dropped].some((d) => d === 1) && [...cache.dropped].some((d) => d === 0), "dropout decided per draw");

  // the draws are a function of (seed, pair, k) only: bit-identical in any batch, order or call
  const batch = pairBatch(pairs, [5, 2]);
  const keys = pairKeys(batch);
  const a = sampleDraws(spec, keys, [3, 1], [3, 8, 8], "cpu");
  const b = sampleDraws(spec, [keys[1]!, "ffff", keys[0]!], [1, 0, 3], [3, 8, 8], "cpu");
  assert.deepEqual(a.noisePairs.slice(0, 0, 1).toFloat32Array(), b.noisePairs.slice(0, 2, 3).toFloat32Array());
  assert.deepEqual(a.noisePairs.slice(0, 1, 2).toFloat32Array(), b.noisePairs.slice(0, 0, 1).toFloat32Array());
  assert.deepEqual([a.tPairs[0], a.coins[0]], [b.tPairs[2], b.coins[2]]);

  const opts: StepOptions = { method: "dpo", schedule, predictionType: "epsilon", promptDropout: 0.5, lossScale: 1, beta: 5000, pairDraws: fixedPairDraws(spec) };
  const grads = (): Float32Array[] => policy.trainableParameters().map(([, p]) => p.grad!.toFloat32Array());
  const zero = (): void => { for (const [, p] of policy.trainableParameters()) p.grad = null; };
  // perturb the policy so the margin is not 0
  tidy(() => { for (const [, p] of policy.trainableParameters()) p.add_(p.mul(0.05)); });
  let worst = 0;
  let worstGrad = 0;
  for (const seed of [0, 1, 2, 3]) {
    const b2 = pairBatch(pairs, seed % 2 === 0 ? [5, 2] : [0, 3]);
    zero();
    const exact = dpoStep({ policy: denoiserOf(policy), reference: denoiserOf(reference), encodePrompts }, b2, new Generator(seed), opts);
    const gExact = grads();
    zero();
    let calls = 0;
    const cached = dpoStep(
      { policy: denoiserOf(policy), reference: () => { calls++; throw new Error("no reference forward"); }, encodePrompts }, b2, new Generator(seed),
      { ...opts, cachedReference: (k, d, t, device) => cache.lookup(k, d, t, device) },
    );
    const gCached = grads();
    assert.equal(calls, 0);
    assert.deepEqual(cached.draws, exact.draws);
    assert.deepEqual(cached.timesteps, exact.timesteps);
    assert.equal(cached.promptsDropped, exact.promptsDropped);
    for (const k of ["loss", "implicitAcc", "policyMse", "referenceMse"] as const) worst = Math.max(worst, relErr(cached[k], exact[k]));
    assert.ok(Math.abs(cached.margin - exact.margin) <= 1e-6 * Math.abs(exact.policyMse), `margin ${cached.margin} vs ${exact.margin}`);
    const scale = Math.max(...gExact.map((g) => Math.max(...g.map(Math.abs))));
    gExact.forEach((g, i) => g.forEach((v, j) => { worstGrad = Math.max(worstGrad, Math.abs(gCached[i]![j]! - v) / scale); }));
  }
  // the cached Rw, Rl are float32 values of the same reference forward, run in another batch
  // composition (4+2 vs 2 pairs): equal up to the kernels' float32 reduction order (measured 0 on
  // CPU here; bound 1e-6 relative, a few float32 ulps times β's amplification of the margin)
  assert.ok(worst <= 1e-6, `metrics differ by ${worst} relative`);
  assert.ok(worstGrad <= 1e-5, `gradients differ by ${worstGrad} of the largest`);
  process.stdout.write(`# cached vs exact step: metrics ${worst.toExponential(2)} relative, gradients ${worstGrad.toExponential(2)} of the largest\n`);
  policy.dispose();
  reference.dispose();
});

const cacheFlags = (outputDir: string, flags: Record<string, unknown> = {}) => loadTrainConfig({
  flags: {
    seed: 3, batchSize: 2, gradientAccumulation: 1, maxSteps: 6, learningRate: 5e-3, scaleLr: false, lrSchedule: "constant", warmupSteps: 0,
    promptDropout: 0.3, beta: 2000, checkpointEvery: 3, keepCheckpoints: 0, outputDir, resume: true, "referenceCache.draws": 3, ...flags,
  },
});

/** A LoRA-shaped tiny run on 6 pairs; counts the reference calls (adapters switched off). */
function loraRun(outputDir: string, flags: Record<string, unknown> = {}, extra: Partial<DpoTrainerOptions> = {}) {
  const model = new TinyLoraDenoiser(7);
  let referenceCalls = 0;
  const adapters = model.adapters();
  const counted = { ...adapters, setEnabled: (on: boolean) => { if (!on) referenceCalls++; adapters.setEnabled(on); } };
  const data = new TensorPairSource(brightPairs(6, 8, 5), 2, 9);
  const events: TrainEvent[] = [];
  const trainer = new DpoTrainer({
    config: cacheFlags(outputDir, { finetune: "lora", ...flags }), model, adapters: counted, encodePrompts, schedule, data,
    onEvent: (e) => events.push(e), ...extra,
  });
  return {
    trainer, events, calls: () => referenceCalls,
    dispose: () => { trainer.dispose(); model.dispose(); data.dispose(); },
  };
}

test("no reference forward runs in the training steps: the cache is built once (K draws × batches), then only read", async () => {
  const run = loraRun(tmp());
  const r = await run.trainer.run();
  const ready = run.events.find((e) => e.type === "reference-cache");
  assert.ok(ready !== undefined && ready.type === "reference-cache");
  assert.equal(ready.action, "built");
  assert.equal(ready.pairs, 6);
  assert.equal(ready.referenceFreedBytes, null, "LoRA has no copy to free");
  assert.equal(run.calls(), 3 /* batches of 2 over 6 pairs */ * 3 /* draws */, "the build ran the reference once per batch and draw, training never");
  assert.equal(r.history.length, 6);
  for (const h of r.history) assert.ok(Number.isFinite(h.metrics.loss) && Number.isFinite(h.metrics.referenceMse));
  assert.notEqual(r.history[5]!.metrics.loss, r.history[0]!.metrics.loss, "the policy trains");
  run.dispose();
});

test("the cache is deterministic, a resumed run reuses it and reproduces the uninterrupted losses", async () => {
  const outA = tmp();
  const full = loraRun(outA);
  const a = await full.trainer.run();
  full.dispose();

  const outB = tmp();
  const first = loraRun(outB, {}, { stopAfterSteps: 3 });
  const b1 = await first.trainer.run();
  first.dispose();
  assert.deepEqual(readFileSync(join(outB, REFERENCE_CACHE_FILE)), readFileSync(join(outA, REFERENCE_CACHE_FILE)), "the same bytes in two runs");

  const second = loraRun(outB);
  const b2 = await second.trainer.run();
  const ready = second.events.find((e) => e.type === "reference-cache");
  assert.ok(ready?.type === "reference-cache" && ready.action === "reused");
  assert.equal(second.calls(), 0, "the resumed run ran no reference forward at all");
  second.dispose();
  assert.deepEqual([...b1.history, ...b2.history].map((h) => h.metrics.loss), a.history.map((h) => h.metrics.loss));
});

test("a cache built for other settings: a fresh run rebuilds it with a warning, a resumed run refuses it naming the file", async () => {
  const out = tmp();
  const path = join(out, REFERENCE_CACHE_FILE);
  const first = loraRun(out, { maxSteps: 3 });
  await first.trainer.run();
  first.dispose();
  const built = ReferenceCache.load(path);

  // resumed with another K: its checkpoint trained against the cache
  const resumed = loraRun(out, { maxSteps: 6, "referenceCache.draws": 2 });
  await assert.rejects(resumed.trainer.run(), (err: Error) => {
    assert.match(err.message, new RegExp(`reference cache ${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} was built for other settings`));
    assert.match(err.message, /draws: 3 in the cache, 2 in this run/);
    assert.match(err.message, /resumes from .*step-000003.*delete .*reference-cache\.safetensors to rebuild/);
    return true;
  });
  resumed.dispose();

  // a fresh run (no resume) with another seed: rebuilt, with a warning naming the file and the difference
  const fresh = loraRun(out, { resume: false, seed: 4, maxSteps: 1 });
  await fresh.trainer.run();
  const warning = fresh.events.find((e) => e.type === "warning" && e.code === "reference-cache");
  assert.ok(warning?.type === "warning");
  assert.ok(warning.message.includes(path) && /seed: 3 in the cache, 4 in this run/.test(warning.message) && /rebuilding/.test(warning.message));
  assert.equal(ReferenceCache.load(path).identity.seed, 4);
  assert.notDeepEqual(ReferenceCache.load(path).rw, built.rw);
  fresh.dispose();

  // not a cache at all: rebuilt on a fresh run
  writeFileSync(path, "garbage");
  const again = loraRun(out, { resume: false, maxSteps: 1 });
  await again.trainer.run();
  const w2 = again.events.find((e) => e.type === "warning" && e.code === "reference-cache");
  assert.ok(w2?.type === "warning" && w2.message.includes("cannot be read"));
  again.dispose();

  // a pair whose input changed (e.g. a flip): the lookup names the file and what to do
  const c = ReferenceCache.load(path);
  assert.throws(() => c.lookup(["0123456789abcdef"], [0], [0], "cpu"), /reference cache .*reference-cache\.safetensors has no entry .*data\.flip false.*delete the file to rebuild/);
});

test("full fine-tuning frees the frozen reference copy after building the cache (live tensor bytes drop by its weights)", async () => {
  const out = tmp();
  const model = new TinyDenoiser(3, 16, 2);
  const weightBytes = [...model.stateDict().values()].reduce((n, t) => n + t.size * 4, 0);
  const data = new TensorPairSource(brightPairs(6, 8, 5), 2, 9);
  const events: TrainEvent[] = [];
  const trainer = new DpoTrainer({ config: cacheFlags(out, { finetune: "full" }), model, encodePrompts, schedule, data, onEvent: (e) => events.push(e) });
  const before = liveTensorBytes();
  const r = await trainer.run();
  const ready = events.find((e) => e.type === "reference-cache");
  assert.ok(ready?.type === "reference-cache");
  assert.equal(ready.referenceFreedBytes, weightBytes, "exactly the copy's weights");
  assert.equal(trainer.referenceModule, null);
  assert.ok(r.history.every((h) => Number.isFinite(h.metrics.loss)));
  // step 1: the policy is the reference, so the loss is ln 2 up to float32 rounding of the two errors
  assert.ok(Math.abs(r.history[0]!.metrics.loss - Math.LN2) < 1e-5, `${r.history[0]!.metrics.loss}`);
  trainer.dispose();
  process.stdout.write(`# full fine-tuning: reference copy freed ${weightBytes} bytes (live bytes before run ${before})\n`);
  model.dispose();
  data.dispose();
});

test("the trainer refuses a reference cache with sampled VAE latents (the input would differ every step)", () => {
  const model = new TinyDenoiser(3, 8, 1);
  const data = new TensorPairSource(brightPairs(4, 8, 5), 2, 9);
  assert.throws(
    () => new DpoTrainer({
      config: cacheFlags(tmp(), { latentSampling: "sample" }), model, encodePrompts, schedule, data, encodeImages: (px: Tensor) => px,
    }),
    /referenceCache \(--reference-cache\) needs the same latents .*--latents mean/,
  );
  model.dispose();
  data.dispose();
});
