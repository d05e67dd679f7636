import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { Generator, liveTensors, noGrad, randn, tensor, tidy, type Tensor, getNumThreads, setNumThreads } from "../../src/tensor/index.js";
import { PREFERENCE_METHODS } from "../../src/losses/preference.js";
import { loadTrainConfig, type TrainConfig } from "../../src/config/train.js";
import { DpoTrainer, NonFiniteError } from "../../src/train/trainer.js";
import { TensorPairSource, type PairBatchSource } from "../../src/train/data.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { formatProgress, jsonlMetricsLog, type TrainEvent } from "../../src/train/events.js";
import { listCheckpoints, loadCheckpoint } from "../../src/train/checkpoint.js";
import type { DenoisingModel } from "../../src/train/dpo-step.js";
import { TinyDenoiser, TinyLoraDenoiser, assertNoTensorGrowth, brightPairs, encodePrompts } from "./tiny.js";

const schedule = new NoiseSchedule();
const tmp = (): string => mkdtempSync(join(tmpdir(), "dpo-train-"));

function config(flags: Record<string, unknown>): TrainConfig {
  return loadTrainConfig({
    flags: {
      seed: 1, batchSize: 4, maxSteps: 4, learningRate: 1e-3, scaleLr: false, warmupSteps: 0,
      lrSchedule: "constant", checkpointEvery: 0, promptDropout: 0.2, ...flags,
    },
  });
}

const snapshot = (m: { namedParameters(): [string, Tensor][] }): Map<string, Float32Array> =>
  new Map(m.namedParameters().map(([n, p]) => [n, p.toFloat32Array()]));

/** Deterministic DDIM (η = 0) from pure noise, 20 steps, returning the mean pixel value. */
function ddimMean(model: DenoisingModel, s: NoiseSchedule, prompts: string[], seed: number): number {
  return tidy(() => noGrad(() => {
    const steps = Array.from({ length: 20 }, (_, i) => 999 - i * 50);
    let x = randn([prompts.length, 3, 8, 8], new Generator(seed));
    const cond = encodePrompts(prompts);
    for (let i = 0; i < steps.length; i++) {
      const t = steps[i]!;
      const a = s.sqrtAlphasCumprod[t]!;
      const sg = s.sqrtOneMinusAlphasCumprod[t]!;
      const eps = model(x, tensor(new BigInt64Array(prompts.length).fill(BigInt(t)), [prompts.length]), cond);
      const x0 = x.sub(eps.mul(sg)).div(a).clamp(-1, 1);
      const next = steps[i + 1];
      x = next === undefined ? x0 : x0.mul(s.sqrtAlphasCumprod[next]!).add(eps.mul(s.sqrtOneMinusAlphasCumprod[next]!));
    }
    return x.mean().item();
  }));
}

test("tiny end-to-end run: chosen images brighter → implicitAcc well above ½, samples get brighter, reference untouched", async () => {
  const out = tmp();
  const model = new TinyDenoiser(3, 16, 0);
  const initial = snapshot(model);
  const data = new TensorPairSource(brightPairs(8, 8, 42), 4, 1);
  const events: TrainEvent[] = [];
  const live: number[] = [];
  const log = jsonlMetricsLog(join(out, "metrics.jsonl"));
  const cfg = config({ maxSteps: 40, beta: 2000, outputDir: out, checkpointEvery: 20, keepCheckpoints: 1, learningRate: 3e-4, "validation.every": 40, "validation.prompts": '["a toy image number 1", "x"]', "validation.seeds": "[1, 2]" });
  const trainer = new DpoTrainer({
    config: cfg, model, encodePrompts, schedule, data,
    onEvent: (e) => { events.push(e); log(e); if (e.type === "step") live.push(liveTensors()); },
    sampleValidation: (d, prompt, seed) => d(randn([1, 3, 8, 8], new Generator(seed)), tensor(new BigInt64Array([500n]), [1]), encodePrompts([prompt])).tanh().reshape([3, 8, 8]),
  });
  const result = await trainer.run();
  const steps = result.history.map((h) => h.metrics);
  assert.equal(steps.length, 40);
  assert.ok(Math.abs(steps[0]!.loss - Math.LN2) < 1e-6, `first step at init: loss ${steps[0]!.loss} = ln 2`);
  for (const m of steps) {
    assert.ok(Number.isFinite(m.loss) && m.implicitAcc >= 0 && m.implicitAcc <= 1);
    assert.ok(m.gradNorm >= 0 && Number.isFinite(m.gradNorm) && m.lr === 3e-4 && m.pairsPerSec > 0);
  }
  const lastAcc = steps.slice(-10).reduce((a, m) => a + m.implicitAcc, 0) / 10;
  const lastLoss = steps.slice(-10).reduce((a, m) => a + m.loss, 0) / 10;
  assert.ok(lastAcc > 0.75, `implicitAcc over the last 10 steps ${lastAcc}`);
  assert.ok(lastLoss < Math.LN2 - 0.05, `loss over the last 10 steps ${lastLoss}`);
  assert.ok(steps.slice(-10).every((m) => m.margin < 0), "margin (Lw−Ll)−(Rw−Rl) negative: chosen errors fall relative to the reference");

  // the reference is bit-identical to the initial weights; every trained weight moved
  const ref = trainer.referenceModule!;
  for (const [name, p] of ref.namedParameters()) assert.deepEqual(p.toFloat32Array(), initial.get(name), `reference ${name} unchanged`);
  for (const [name, p] of model.namedParameters()) assert.notDeepEqual(p.toFloat32Array(), initial.get(name), `${name} trained`);

  // samples from the same seeds are brighter after training
  const prompts = Array.from({ length: 8 }, (_, i) => `a toy image number ${i}`);
  const deltas = [1, 2, 3].map((seed) =>
    ddimMean((x, t, c) => model.forward(x, t, c), schedule, prompts, seed) - ddimMean((x, t, c) => ref.forward(x, t, c), schedule, prompts, seed));
  assert.ok(deltas.every((d) => d > 0), `every seed's samples get brighter: ${deltas.join(", ")}`);
  assert.ok(deltas.reduce((a, b) => a + b) / deltas.length > 0.01, `mean brightness gain ${deltas.join(", ")}`);
  assert.ok(steps[0]!.gradNorm > 1, "the first step's gradient is clipped from a norm above 1");

  // no native memory growth per step
  assertNoTensorGrowth(live);

  // events, checkpoints (keep 1), config.json, final weights, validation grid, JSONL log
  // the toy denoiser has no diffusers config: the final unet/ holds weights only, and a warning says so
  assert.deepEqual(events.map((e) => e.type).filter((t) => t !== "step"), ["start", "checkpoint", "checkpoint", "validation", "warning", "done"]);
  assert.match(events.find((e) => e.type === "warning")?.type === "warning" ? (events.find((e) => e.type === "warning") as { message: string }).message : "", /without a config\.json/);
  const cks = listCheckpoints(out);
  assert.deepEqual(cks.map(([s]) => s), [40]);
  const ck = loadCheckpoint(cks[0]![1]);
  assert.deepEqual(ck.config, JSON.parse(JSON.stringify(cfg)));
  assert.equal(ck.state.step, 40);
  assert.equal(ck.state.batchIndex, 40);
  assert.deepEqual([...ck.weights.keys()].sort(), [...model.stateDict().keys()].sort());
  assert.ok(existsSync(join(out, "final", "unet", "diffusion_pytorch_model.safetensors")));
  const grid = await sharp(join(out, "validation", "step-000040.png")).metadata();
  assert.deepEqual([grid.width, grid.height], [4 * 8 + 5 * 2, 2 * 8 + 3 * 2], "2 prompts × (2 seeds × base|current)");
  const lines = readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  const stepLines = lines.filter((l) => l.type === "step");
  assert.equal(stepLines.length, 40);
  for (const key of ["loss", "implicitAcc", "policyMse", "referenceMse", "margin", "gradNorm", "lr", "pairsPerSec"]) {
    assert.equal(typeof stepLines[0]![key], "number", `metrics.jsonl has ${key}`);
  }
  const last = events.filter((e) => e.type === "step").pop()!;
  assert.match(formatProgress(last as Extract<TrainEvent, { type: "step" }>), /^step 40\/40 \[█+\] 100% eta 0s loss \d\.\d{4} acc \d\.\d{3}$/);
  trainer.dispose();
  model.dispose();
  data.dispose();
});

test("every method trains a few steps with finite values (full and bf16 autocast)", async () => {
  for (const method of PREFERENCE_METHODS) {
    const model = new TinyDenoiser(3, 8, 1);
    const data = new TensorPairSource(brightPairs(4, 8, 3), 2, 0);
    const trainer = new DpoTrainer({ config: config({ method, maxSteps: 2, batchSize: 2, outputDir: tmp(), referenceMetrics: "false" }), model, encodePrompts, schedule, data });
    const r = await trainer.run();
    assert.equal(r.history.length, 2);
    for (const h of r.history) assert.ok(Number.isFinite(h.metrics.loss) && Number.isFinite(h.metrics.gradNorm), `${method}`);
    const needsRef = method !== "sft" && method !== "mapo";
    assert.equal(Number.isFinite(r.history[0]!.metrics.implicitAcc), needsRef, `${method}: reference metrics only when a reference ran`);
    trainer.dispose();
    model.dispose();
    data.dispose();
  }
  const model = new TinyDenoiser(3, 8, 1);
  const data = new TensorPairSource(brightPairs(4, 8, 3), 2, 0);
  const trainer = new DpoTrainer({ config: config({ maxSteps: 2, batchSize: 2, outputDir: tmp(), mixedPrecision: "bf16" }), model, encodePrompts, schedule, data });
  const r = await trainer.run();
  for (const h of r.history) assert.ok(Number.isFinite(h.metrics.loss), "bf16 autocast step is finite");
  trainer.dispose();
  model.dispose();
  data.dispose();
});

test("LoRA: the reference is the same network with adapters off; base weights bit-identical; checkpoint holds adapters only", async () => {
  const out = tmp();
  const model = new TinyLoraDenoiser(5, 2);
  const base = snapshot(model);
  const data = new TensorPairSource(brightPairs(8, 8, 9), 4, 0);
  const adapters = model.adapters();
  const trainer = new DpoTrainer({
    config: config({ finetune: "lora", maxSteps: 6, outputDir: out, checkpointEvery: 3, "optimizer.kind": "adafactor", learningRate: 1e-2 }),
    model, adapters, encodePrompts, schedule, data,
  });
  const r = await trainer.run();
  assert.ok(Math.abs(r.history[0]!.metrics.loss - Math.LN2) < 1e-6, "zero-initialised adapters: ln 2 at the first step");
  assert.equal(trainer.referenceModule, null, "no second copy of the network");
  assert.equal(model.loraEnabled, true);
  for (const [name, p] of model.namedParameters()) {
    if (name.startsWith("lora_")) continue;
    assert.deepEqual(p.toFloat32Array(), base.get(name), `base ${name} unchanged`);
  }
  assert.notDeepEqual(model.lora_up.weight.toFloat32Array(), base.get("lora_up.weight"));
  const ck = loadCheckpoint(listCheckpoints(out).pop()![1]);
  assert.deepEqual([...ck.weights.keys()].sort(), ["lora_down.weight", "lora_up.weight"]);
  assert.equal(ck.optimizer.meta.kind, "adafactor");
  assert.ok(existsSync(join(out, "final", "pytorch_lora_weights.safetensors")));
  assert.throws(() => new DpoTrainer({ config: config({ finetune: "lora" }), model, encodePrompts, schedule, data }), /no LoRA adapters were given/);
  trainer.dispose();
  model.dispose();
  data.dispose();
});

class PoisonedSource implements PairBatchSource {
  constructor(readonly inner: TensorPairSource, readonly badIndex: number) {}
  get batchSize() { return this.inner.batchSize; }
  batch(i: number) {
    const b = this.inner.batch(i);
    if (i !== this.badIndex) return b;
    const bad = tidy(() => b.pixels.mul(Number.NaN));
    b.pixels.dispose();
    return { prompts: b.prompts, pixels: bad };
  }
}

test("non-finite loss: stop names the step and keeps the last good checkpoint; skip counts and continues", async () => {
  const out = tmp();
  const model = new TinyDenoiser(3, 8, 2);
  const inner = new TensorPairSource(brightPairs(8, 8, 1), 4, 0);
  const trainer = new DpoTrainer({ config: config({ maxSteps: 6, outputDir: out, checkpointEvery: 1, keepCheckpoints: 2 }), model, encodePrompts, schedule, data: new PoisonedSource(inner, 2) });
  await assert.rejects(trainer.run(), (err: unknown) => {
    assert.ok(err instanceof NonFiniteError);
    assert.equal(err.step, 3);
    assert.match(err.message, /non-finite loss at step 3/);
    assert.match(err.message, /beta/);
    assert.match(err.message, /learning rate/);
    assert.match(err.message, /fp16/);
    assert.match(err.message, /step-000002/);
    return true;
  });
  const cks = listCheckpoints(out);
  assert.deepEqual(cks.map(([s]) => s), [1, 2]);
  const ck = loadCheckpoint(cks[1]![1]);
  for (const [name, t] of ck.weights) assert.ok(t.isFinite().all().item() === 1, `${name} finite in the kept checkpoint`);
  for (const p of model.parameters()) assert.equal(p.isFinite().all().item(), 1, "the bad update was not applied");
  trainer.dispose();

  const warnings: TrainEvent[] = [];
  const skipper = new DpoTrainer({
    config: config({ maxSteps: 4, outputDir: tmp(), onNonFinite: "skip" }), model, encodePrompts, schedule,
    data: new PoisonedSource(inner, 1), onEvent: (e) => { if (e.type === "warning" && e.code === "non-finite-skipped") warnings.push(e); },
  });
  const r = await skipper.run();
  assert.equal(r.step, 4);
  assert.equal(r.skippedSteps, 1);
  assert.equal(warnings.length, 1);
  assert.match((warnings[0] as { message: string }).message, /step 2: update skipped/);
  assert.equal(r.history[3]!.metrics.skippedSteps, 1);
  skipper.dispose();
  model.dispose();
  inner.dispose();
});

test("steps are pipelined by default for LoRA from 8 pairs, not for full fine-tuning or smaller batches (2 threads)", async () => {
  const threads = getNumThreads();
  setNumThreads(2);
  try {
    // prompt encodings by the end of the first step: its own batch, plus the next one when it was prepared ahead
    const encodingsAtFirstStep = async (finetune: "lora" | "full", pairs: number, pipelineSteps?: boolean): Promise<number> => {
      const model = finetune === "lora" ? new TinyLoraDenoiser(5, 2) : new TinyDenoiser(3, 8, 4);
      const data = new TensorPairSource(brightPairs(2 * pairs, 8, 9), pairs, 0);
      let calls = 0;
      let atFirst = -1;
      const trainer = new DpoTrainer({
        config: config({ finetune, batchSize: pairs, maxSteps: 2, outputDir: tmp(), checkpointEvery: 0 }),
        model, adapters: finetune === "lora" ? (model as TinyLoraDenoiser).adapters() : undefined, schedule, data,
        encodePrompts: (p) => { calls++; return encodePrompts(p); },
        onEvent: (e) => { if (e.type === "step" && atFirst < 0) atFirst = calls; },
        ...(pipelineSteps !== undefined ? { pipelineSteps } : {}),
      });
      try {
        await trainer.run();
      } finally {
        trainer.dispose();
        model.dispose();
        data.dispose();
      }
      return atFirst;
    };
    assert.equal(await encodingsAtFirstStep("lora", 8), 2, "LoRA, 8 pairs: pipelined");
    assert.equal(await encodingsAtFirstStep("lora", 4), 1, "LoRA, 4 pairs: not");
    assert.equal(await encodingsAtFirstStep("full", 8), 1, "full, 8 pairs: not");
    assert.equal(await encodingsAtFirstStep("full", 8, true), 2, "full, 8 pairs, forced: pipelined");
    assert.equal(await encodingsAtFirstStep("lora", 8, false), 1, "LoRA, 8 pairs, turned off: not");
  } finally {
    setNumThreads(threads);
  }
});
