// SDXL's micro-conditioning from the augmentation, as diffusers' SDXL DPO script builds add_time_ids:
// (original size of the chosen image [h, w], crop top-left [top, left] in the resized and flipped
// image, target size = the training resolution), per pair, through the loader, the batch source,
// the DPO step and the SDXL prompt encoding. Expected values are worked out by hand below.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { augmentPair } from "../../src/data/images.js";
import { Rng } from "../../src/data/random.js";
import { JsonlSource } from "../../src/data/jsonl.js";
import { PreferenceLoader } from "../../src/data/loader.js";
import { LoaderBatchSource } from "../../src/train/data.js";
import { dpoStep, type PairMicroConditioning } from "../../src/train/dpo-step.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { Generator, rand, type Tensor } from "../../src/tensor/index.js";
import type { RawImage } from "../../src/data/types.js";
import { referenceCase } from "../_reference.js";
import { disposeTextToImageModel, encodePrompts, loadModelFolder } from "../../src/models/pipeline.js";
import { unpackConditioning } from "../../src/models/sdxl/conditioning.js";

const raw = (width: number, height: number): RawImage => ({
  width, height, channels: 3, data: new Uint8Array(width * height * 3).map((_, i) => (i * 37) % 256),
});

test("augmentPair reports the chosen image's original size and the crop's top-left corner", async () => {
  const res = 16;
  const out = new Float32Array(2 * 3 * res * res);
  // 30 wide × 40 high → resized 16 × floor(16·40/30) = 16 × 21; center crop top = round(2.5) = 2 (half to even), left 0
  const g = await augmentPair(raw(30, 40), raw(50, 20), { resolution: res, crop: "center", flip: false }, new Rng(0), out, 0, out.length / 2);
  assert.deepEqual(g, { originalSize: [40, 30], cropTopLeft: [2, 0] });
  // 40 wide × 20 high → 32 × 16; center left = 8; a flip mirrors it: 32 − 8 − 16 = 8 (center stays center)
  const c = await augmentPair(raw(40, 20), raw(40, 20), { resolution: res, crop: "center", flip: true }, new Rng(3), out, 0, out.length / 2);
  assert.deepEqual(c, { originalSize: [20, 40], cropTopLeft: [0, 8] });
  // random crops: left' = 32 − left − 16 when flipped, so both halves of [0, 16] show up and stay in range
  const lefts = new Set<number>();
  for (let seed = 0; seed < 24; seed++) {
    const r = await augmentPair(raw(40, 20), raw(40, 20), { resolution: res, crop: "random", flip: true }, new Rng(seed), out, 0, out.length / 2);
    assert.equal(r.cropTopLeft[0], 0);
    assert.ok(r.cropTopLeft[1] >= 0 && r.cropTopLeft[1] <= 16);
    lefts.add(r.cropTopLeft[1]);
  }
  assert.ok(lefts.size > 4, "random crops move");
});

test("the loader and LoaderBatchSource carry each pair's micro-conditioning (target = the training size)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "dpo-micro-"));
  try {
    const lines: string[] = [];
    for (let i = 0; i < 2; i++) {
      // chosen 24 wide × 16 high, rejected 16 × 16: at resolution 16 the chosen is center-cropped at left 4
      await sharp(Buffer.from(raw(24, 16).data), { raw: { width: 24, height: 16, channels: 3 } }).png().toFile(join(dir, `c${i}.png`));
      await sharp(Buffer.from(raw(16, 16).data), { raw: { width: 16, height: 16, channels: 3 } }).png().toFile(join(dir, `r${i}.png`));
      lines.push(JSON.stringify({ prompt: `p${i}`, chosen: `c${i}.png`, rejected: `r${i}.png` }));
    }
    writeFileSync(join(dir, "pairs.jsonl"), `${lines.join("\n")}\n`);
    const loader = new PreferenceLoader(new JsonlSource(join(dir, "pairs.jsonl")), { batchSize: 2, augment: { resolution: 16, flip: false }, seed: 0, workers: 0 });
    const source = new LoaderBatchSource(loader, 2);
    const b = await source.batch(0);
    b.pixels.dispose();
    await source.close();
    const want: PairMicroConditioning = { originalSize: [16, 24], cropTopLeft: [0, 4], targetSize: [16, 16] };
    assert.deepEqual(b.micro, [want, want]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("dpoStep hands the batch's micro-conditioning to encodePrompts; SDXL packs it as the time ids", () => {
  const folder = referenceCase("sdxl-pipeline").pipelineFolder();
  const model = loadModelFolder(folder);
  try {
    const micro: PairMicroConditioning[] = [
      { originalSize: [512, 384], cropTopLeft: [10, 20], targetSize: [64, 64] },
      { originalSize: [64, 64], cropTopLeft: [0, 0], targetSize: [64, 64] },
    ];
    let seenTimeIds: number[] = [];
    let seenMicro: PairMicroConditioning[] | undefined;
    const encode = (prompts: string[], m?: PairMicroConditioning[]): Tensor => {
      seenMicro = m;
      const c = encodePrompts(model, prompts, { micro: m });
      seenTimeIds = unpackConditioning(c)!.added.timeIds.toArray();
      return c;
    };
    const pixels = rand([4, 3, 64, 64], new Generator(5)).mul(2).sub(1); // 2 pairs of 64×64 images in [−1, 1]
    const r = dpoStep(
      { policy: (x, t, c) => model.unet.forward(x, t, c), reference: (x, t, c) => model.unet.forward(x, t, c), encodePrompts: encode,
        encodeImages: (px) => model.vae!.encodeLatents(px) },
      { prompts: ["a red apple", "a table"], pixels, micro },
      new Generator(0),
      { method: "dpo", beta: 5000, schedule: new NoiseSchedule(model.scheduler), predictionType: "epsilon", promptDropout: 0, lossScale: 1 },
    );
    pixels.dispose();
    assert.ok(Math.abs(r.loss - Math.LN2) < 1e-6, "policy = reference: ln 2");
    assert.deepEqual(seenMicro, micro);
    assert.deepEqual(seenTimeIds, [512, 384, 10, 20, 64, 64, 64, 64, 0, 0, 64, 64]);
  } finally {
    disposeTextToImageModel(model);
    rmSync(folder, { recursive: true, force: true });
  }
});
