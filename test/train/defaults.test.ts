// Defaults that decide whether a run trains at all: LoRA's own learning rate and warmup, the
// warmup-longer-than-run warning, the reference copy of sft/mapo full fine-tunes, the VAE latent
// sampling, and a full fine-tune's final unet/ folder that loads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configWarnings, effectiveLearningRate, FINETUNE_DEFAULTS, loadTrainConfig } from "../../src/config/train.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { parseUNetConfig, TINY_UNET_CONFIG } from "../../src/models/unet/config.js";
import { UNet2DConditionModel } from "../../src/models/unet/unet.js";
import { setInitSeed } from "../../src/nn/index.js";
import { readSafetensorsSync } from "../../src/io/safetensors.js";
import { Generator, liveTensors, randn, tensor, tidy, type Tensor } from "../../src/tensor/index.js";
import { TensorPairSource } from "../../src/train/data.js";
import { dpoStep, type StepModels } from "../../src/train/dpo-step.js";
import type { TrainEvent } from "../../src/train/events.js";
import { DpoTrainer } from "../../src/train/trainer.js";
import { TinyDenoiser, brightPairs, encodePrompts, pairBatch } from "./tiny.js";

const tmp = () => mkdtempSync(join(tmpdir(), "ddpo-defaults-"));

test("LoRA gets its own defaults: lr 1e-4 as given, constant, no warmup; full keeps the official recipe", () => {
  const lora = loadTrainConfig({ flags: { finetune: "lora", batchSize: "8" } });
  assert.equal(lora.learningRate, 1e-4);
  assert.equal(lora.scaleLr, false);
  assert.equal(lora.warmupSteps, 0);
  assert.equal(lora.lrSchedule, "constant");
  assert.equal(effectiveLearningRate(lora), 1e-4, "a LoRA lr is not multiplied by the batch unless asked");
  const full = loadTrainConfig({ flags: { batchSize: "8" } });
  assert.equal(full.learningRate, 1e-8);
  assert.equal(full.scaleLr, true);
  assert.equal(full.warmupSteps, 500);
  assert.equal(full.lrSchedule, "constant_with_warmup");
  assert.equal(effectiveLearningRate(full), 8e-8);
  // what the user gives wins, in either mode
  const asked = loadTrainConfig({ flags: { finetune: "lora", learningRate: "3e-4", scaleLr: "true", warmupSteps: "10", batchSize: "2" } });
  assert.equal(effectiveLearningRate(asked), 6e-4);
  assert.equal(asked.warmupSteps, 10);
  assert.deepEqual(FINETUNE_DEFAULTS.lora.learningRate, 1e-4);
  // a resumed run reads its resolved settings back unchanged
  assert.deepEqual(loadTrainConfig({ layers: [JSON.parse(JSON.stringify(lora)) as Record<string, unknown>] }), lora);
});

test("a warmup longer than the run is a warning, from the config and as a trainer event", async () => {
  const cfg = loadTrainConfig({ flags: { maxSteps: "2", batchSize: "2", outputDir: tmp(), checkpointEvery: "0" } });
  assert.equal(cfg.warmupSteps, 500);
  const warnings = configWarnings(cfg);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /warmup \(500 steps\) is longer than the run \(2 steps\)/);
  assert.deepEqual(configWarnings(loadTrainConfig({ flags: { maxSteps: "600" } })), []);
  const model = new TinyDenoiser(3, 8, 1);
  const data = new TensorPairSource(brightPairs(4, 8, 3), 2, 0);
  const events: TrainEvent[] = [];
  const trainer = new DpoTrainer({ config: cfg, model, encodePrompts, schedule: new NoiseSchedule(), data, onEvent: (e) => events.push(e) });
  await trainer.run();
  const w = events.filter((e) => e.type === "warning" && e.code === "config");
  assert.ok(w.some((e) => e.type === "warning" && /longer than the run/.test(e.message)), JSON.stringify(events.filter((e) => e.type === "warning")));
  trainer.dispose();
  model.dispose();
  data.dispose();
});

test("sft and mapo full fine-tunes hold no reference copy unless referenceMetrics is on", async () => {
  for (const method of ["sft", "mapo"]) {
    const held: Record<string, number> = {};
    for (const referenceMetrics of ["default", "true"]) {
      const model = new TinyDenoiser(3, 8, 1);
      const data = new TensorPairSource(brightPairs(4, 8, 3), 2, 0);
      const flags: Record<string, unknown> = { method, maxSteps: "1", batchSize: "2", outputDir: tmp(), warmupSteps: "0", checkpointEvery: "0" };
      if (referenceMetrics === "true") flags.referenceMetrics = "true";
      const before = liveTensors();
      const trainer = new DpoTrainer({ config: loadTrainConfig({ flags }), model, encodePrompts, schedule: new NoiseSchedule(), data });
      const r = await trainer.run();
      held[referenceMetrics] = liveTensors() - before; // optimizer state, plus the reference copy if any
      assert.equal(Number.isFinite(r.history[0]!.metrics.referenceMse), referenceMetrics === "true", `${method} ${referenceMetrics}: reference metrics`);
      trainer.dispose();
      model.dispose();
      data.dispose();
    }
    // the reference is a deep copy: one tensor per parameter, held until dispose()
    const copy = new TinyDenoiser(3, 8, 1);
    assert.equal(held.true! - held.default!, copy.parameters().length, `${method}: the copy exists only with referenceMetrics (${JSON.stringify(held)})`);
    copy.dispose();
  }
});

test("VAE latents are a posterior sample by default (official latent_dist.sample()), the mean on request", () => {
  tidy(() => {
    const calls: Array<((shape: readonly number[]) => Tensor) | undefined> = [];
    // a stand-in encoder: "latents" = pixels + posterior noise (when a noise source is given)
    const encodeImages = (px: Tensor, noise?: (shape: readonly number[]) => Tensor): Tensor => {
      calls.push(noise);
      return noise ? px.add(noise(px.shape).mul(0.1)) : px;
    };
    const policy = new TinyDenoiser(3, 8, 1);
    const models: StepModels = {
      policy: (x, t, c) => policy.forward(x, t, c), reference: (x, t, c) => policy.forward(x, t, c), encodePrompts, encodeImages,
    };
    const batch = pairBatch(brightPairs(2, 8, 5), [0, 1]);
    const opts = { method: "dpo" as const, beta: 5000, schedule: new NoiseSchedule(), predictionType: "epsilon" as const, promptDropout: 0, lossScale: 1 };
    const a = dpoStep(models, batch, new Generator(1), opts);
    const b = dpoStep(models, batch, new Generator(1), opts);
    assert.equal(typeof calls[0], "function", "default: the encoder gets a noise source");
    assert.equal(a.loss, b.loss, "the same generator draws the same posterior noise (a reproducible step)");
    dpoStep(models, batch, new Generator(1), { ...opts, latentSampling: "mean" });
    assert.equal(calls[2], undefined, "latentSampling mean: no noise source, the posterior mean");
    // the noise source draws N(0, 1) of the latent shape, [chosen…, rejected…]
    let stats: number[] = [];
    dpoStep({
      ...models,
      encodeImages: (px, noise) => {
        const d = noise!([4, 3, 8, 8]);
        stats = [...d.shape, d.mean().item(), d.std().item()];
        return px;
      },
    }, batch, new Generator(2), opts);
    assert.deepEqual(stats.slice(0, 4), [4, 3, 8, 8]);
    // 768 draws: |mean| < 0.15 and |std − 1| < 0.15 are > 4 standard errors
    assert.ok(Math.abs(stats[4]!) < 0.15 && Math.abs(stats[5]! - 1) < 0.15, `standard normal: ${stats.slice(4)}`);
    policy.dispose();
  });
  assert.equal(loadTrainConfig({}).latentSampling, "sample");
});

test("a full fine-tune's default final save writes unet/ with its config.json, and it loads", async () => {
  setInitSeed(3);
  const unet = new UNet2DConditionModel({ ...TINY_UNET_CONFIG, blockOutChannels: [16, 16, 16], normNumGroups: 4, crossAttentionDim: 8 });
  const out = tmp();
  const data = new TensorPairSource(brightPairs(2, 8, 3), 2, 0);
  const trainer = new DpoTrainer({
    config: loadTrainConfig({ flags: { maxSteps: "1", batchSize: "2", outputDir: out, warmupSteps: "0", checkpointEvery: "0" } }),
    model: unet, encodePrompts, schedule: new NoiseSchedule(), data,
  });
  await trainer.run();
  const dir = join(out, "final", "unet");
  const { config } = parseUNetConfig(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")), join(dir, "config.json"));
  assert.deepEqual(config, unet.config);
  const loaded = new UNet2DConditionModel(config);
  const { tensors } = readSafetensorsSync(join(dir, "diffusion_pytorch_model.safetensors"));
  loaded.loadStateDict(tensors, { source: dir });
  tidy(() => {
    const x = randn([1, 3, 8, 8], new Generator(1));
    const c = encodePrompts(["a"]);
    const t = tensor([10]);
    // the same weights and the same inputs through the same kernels: identical
    assert.equal(loaded.forward(x, t, c).sub(unet.forward(x, t, c)).abs().amax().item(), 0);
  });
  for (const t of tensors.values()) t.dispose();
  trainer.dispose();
  loaded.dispose();
  unet.dispose();
  data.dispose();
});
