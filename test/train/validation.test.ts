import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { noGrad, tensor, type Tensor } from "../../src/tensor/index.js";
import { setInitSeed } from "../../src/nn/index.js";
import { TINY_UNET_CONFIG, UNet2DConditionModel } from "../../src/models/unet/index.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { validationSampler, writeImageGrid } from "../../src/train/validation.js";
import type { DenoisingModel } from "../../src/train/dpo-step.js";

const D = TINY_UNET_CONFIG.crossAttentionDim as number;
const encode = (prompts: string[]): Tensor =>
  tensor(Float32Array.from({ length: prompts.length * 2 * D }, (_, k) => (prompts[Math.floor(k / (2 * D))]!.length % 5) / 5 - 0.4), [prompts.length, 2, D]);

test("validationSampler: seeded, guided samples [3, H, W] in [−1, 1]; same seed same image; base and tuned side by side in a grid", async () => {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(TINY_UNET_CONFIG);
  setInitSeed(1);
  const other = new UNet2DConditionModel(TINY_UNET_CONFIG);
  const sampleImage = validationSampler({ encodePrompts: encode, schedule: new NoiseSchedule(), shape: [3, 8, 8], steps: 2, guidanceScale: 3 });
  const a: DenoisingModel = (x, t, c) => unet.forward(x, t, c);
  const b: DenoisingModel = (x, t, c) => other.forward(x, t, c);
  const [x1, x2, x3, y1] = noGrad(() => [sampleImage(a, "a cat", 4), sampleImage(a, "a cat", 4), sampleImage(a, "a cat", 5), sampleImage(b, "a cat", 4)]);
  assert.deepEqual(x1!.shape, [3, 8, 8]);
  const v = x1!.toFloat32Array();
  assert.ok(v.every((p) => p >= -1 && p <= 1));
  assert.deepEqual(v, x2!.toFloat32Array(), "same model, prompt and seed: the same image");
  assert.notDeepEqual(v, x3!.toFloat32Array(), "another seed: another image");
  assert.notDeepEqual(v, y1!.toFloat32Array(), "another model, same seed: another image");
  const path = join(mkdtempSync(join(tmpdir(), "dpo-val-")), "grid.png");
  await writeImageGrid(path, [[x1!, y1!], [x3!, x2!]]);
  const meta = await sharp(path).metadata();
  assert.deepEqual([meta.width, meta.height], [2 * 8 + 3 * 2, 2 * 8 + 3 * 2]);
  for (const t of [x1, x2, x3, y1]) t!.dispose();
  unet.dispose();
  other.dispose();
});
