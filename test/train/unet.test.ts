import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tensor, type Tensor } from "../../src/tensor/index.js";
import { setInitSeed } from "../../src/nn/index.js";
import { injectLora } from "../../src/nn/lora.js";
import { TINY_UNET_CONFIG, UNet2DConditionModel } from "../../src/models/unet/index.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer, loraAdapters } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import { readSafetensorsSync } from "../../src/io/safetensors.js";
import { brightPairs, toyPromptEncoding } from "./tiny.js";

const D = TINY_UNET_CONFIG.crossAttentionDim as number;
const encode = (prompts: string[]): Tensor => toyPromptEncoding(prompts, D);

const snapshot = (m: UNet2DConditionModel) => new Map(m.namedParameters().map(([n, p]) => [n, p.toFloat32Array()]));

function setup(flags: Record<string, unknown>) {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(TINY_UNET_CONFIG);
  const data = new TensorPairSource(brightPairs(4, 16, 2), 1, 0);
  const config = loadTrainConfig({
    flags: { seed: 0, batchSize: 1, maxSteps: 2, learningRate: 1e-3, scaleLr: false, warmupSteps: 0, lrSchedule: "constant", checkpointEvery: 0, outputDir: mkdtempSync(join(tmpdir(), "dpo-unet-")), ...flags },
  });
  return { unet, data, config };
}

test("LoRA DPO on the tiny UNet2DConditionModel: ln 2 at start, base weights bit-identical, diffusers-named LoRA file", async () => {
  const { unet, data, config } = setup({ finetune: "lora", "lora.rank": "4" });
  injectLora(unet, { rank: config.lora.rank, alpha: config.lora.alpha, targets: config.lora.targets });
  const before = snapshot(unet);
  const trainer = new DpoTrainer({ config, model: unet, adapters: loraAdapters(unet), encodePrompts: encode, schedule: new NoiseSchedule(), data });
  const r = await trainer.run();
  assert.ok(Math.abs(r.history[0]!.metrics.loss - Math.LN2) < 1e-6, `zero-initialised LoRA B: ln 2, got ${r.history[0]!.metrics.loss}`);
  for (const h of r.history) assert.ok(Number.isFinite(h.metrics.loss) && h.metrics.gradNorm > 0);
  let changed = 0;
  for (const [name, p] of unet.namedParameters()) {
    const same = Buffer.from(p.toFloat32Array().buffer).equals(Buffer.from(before.get(name)!.buffer));
    if (name.includes("lora_")) changed += same ? 0 : 1;
    else assert.ok(same, `base weight ${name} is bit-identical after training`);
  }
  assert.ok(changed > 0, "adapters trained");
  const saved = readSafetensorsSync(join(r.finalPath!, "pytorch_lora_weights.safetensors"));
  const keys = [...saved.tensors.keys()];
  assert.ok(keys.length > 0 && keys.every((k) => k.startsWith("unet.") && /\.lora\.(down|up)\.weight$/.test(k)), keys.slice(0, 3).join(", "));
  trainer.dispose();
  unet.dispose();
  data.dispose();
});

test("full fine-tuning of the tiny UNet: the frozen reference copy stays bit-identical", async () => {
  const { unet, data, config } = setup({ maxSteps: 1 });
  const before = snapshot(unet);
  const trainer = new DpoTrainer({ config, model: unet, encodePrompts: encode, schedule: new NoiseSchedule(), data });
  const r = await trainer.run();
  assert.ok(Math.abs(r.history[0]!.metrics.loss - Math.LN2) < 1e-6);
  for (const [name, p] of trainer.referenceModule!.namedParameters()) {
    assert.ok(Buffer.from(p.toFloat32Array().buffer).equals(Buffer.from(before.get(name)!.buffer)), `reference ${name}`);
  }
  trainer.dispose();
  unet.dispose();
  data.dispose();
});
