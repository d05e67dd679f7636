import { test } from "node:test";
import assert from "node:assert/strict";
import { assertPixelsNear } from "../_close.js";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { EMOJI_SCHEDULE, emojiTextConfig } from "../../src/datasets/emojiModel.js";
import { pruneClipTokenizer } from "../../src/datasets/tokenizer.js";
import { createTextToImageModel, disposeTextToImageModel, loadModelFolder, saveModelFolder } from "../../src/models/pipeline.js";
import { TINY_AUTOENCODER_KL_CONFIG } from "../../src/models/vae/autoencoder-kl.js";
import { TINY_UNET_CONFIG } from "../../src/models/unet/config.js";
import { setInitSeed } from "../../src/nn/init.js";
import { generate, imagesToTensor, tensorToImages, type RgbImage } from "../../src/sample/generate.js";
import { encodePng, makeGrid, readImage, wrapLabel, writeSamples } from "../../src/sample/png.js";
import { tensor } from "../../src/tensor/index.js";

function tinyModel() {
  const tokenizer = pruneClipTokenizer(["red apple", "blue car", "grinning face"], { modelMaxLength: 16 });
  setInitSeed(0);
  return createTextToImageModel({ unet: { ...TINY_UNET_CONFIG, sampleSize: 16 }, textEncoder: emojiTextConfig(tokenizer), tokenizer, scheduler: EMOJI_SCHEDULE, vae: null });
}

test("tensor ↔ image conversion is round(clamp((x+1)/2, 0, 1)·255)", () => {
  const x = tensor([-1, 1, 0, 2, -0.5, 0.25], [1, 3, 1, 2]);
  const [im] = tensorToImages(x);
  // channel-major input [c][w] → HWC output [w][c]
  const expect = (v: number) => Math.round(Math.min(1, Math.max(0, (v + 1) / 2)) * 255);
  assert.deepEqual(Array.from(im!.data), [expect(-1), expect(0), expect(-0.5), expect(1), expect(2), expect(0.25)]);
  const img: RgbImage = { width: 2, height: 1, data: new Uint8Array([0, 64, 128, 200, 255, 7]) };
  assert.deepEqual(Array.from(tensorToImages(imagesToTensor([img]))[0]!.data), Array.from(img.data));
});

test("generate: seeds decide the image, independent of batch; img2img at strength 0 returns the input", () => {
  const model = tinyModel();
  try {
    const common = { model, steps: 3, sampler: "ddim" as const, guidance: 2 };
    const both = generate({ ...common, prompts: ["red apple", "blue car"], seeds: [5, 9] });
    const alone = generate({ ...common, prompts: ["blue car"], seeds: [9] });
    assert.equal(both.length, 2);
    assert.equal(both[0]!.width, 16);
    // batch 2 vs batch 1: different kernels, so pixels agree within one 8-bit level (test/_close.ts)
    assertPixelsNear(alone[0]!.data, both[1]!.data, "seed 9 alone vs in a batch of 2");
    const other = generate({ ...common, prompts: ["blue car"], seeds: [10] });
    assert.notDeepEqual(other[0]!.data, alone[0]!.data);
    // a stochastic sampler is reproducible too
    const a = generate({ ...common, sampler: "euler_ancestral", prompts: ["red apple"], seeds: [3] });
    const b = generate({ ...common, sampler: "euler_ancestral", prompts: ["red apple"], seeds: [3], batchSize: 1 });
    assert.deepEqual(a[0]!.data, b[0]!.data);
    const init: RgbImage = { width: 16, height: 16, data: new Uint8Array(16 * 16 * 3).map((_, i) => (i * 7) % 256) };
    const same = generate({ ...common, prompts: ["red apple"], initImages: [init], strength: 0 });
    assert.deepEqual(same[0]!.data, init.data);
    const edited = generate({ ...common, prompts: ["red apple"], initImages: [init], strength: 0.7 });
    assert.notDeepEqual(edited[0]!.data, init.data);
    assert.throws(() => generate({ ...common, prompts: ["a", "b"], seeds: [1] }), /one seed per prompt/);
  } finally {
    disposeTextToImageModel(model);
  }
});

test("a latent model (VAE) saved as a diffusers folder loads and generates at VAE scale", () => {
  const dir = mkdtempSync(join(tmpdir(), "latent-"));
  const tokenizer = pruneClipTokenizer(["red apple"], { modelMaxLength: 16 });
  setInitSeed(1);
  const model = createTextToImageModel({
    unet: { ...TINY_UNET_CONFIG, inChannels: 4, outChannels: 4, sampleSize: 8 }, vae: TINY_AUTOENCODER_KL_CONFIG,
    textEncoder: emojiTextConfig(tokenizer), tokenizer, scheduler: EMOJI_SCHEDULE,
  });
  try {
    saveModelFolder(join(dir, "m"), model);
    const loaded = loadModelFolder(join(dir, "m"));
    const a = generate({ model, prompts: ["red apple"], seeds: [4], steps: 2 });
    const b = generate({ model: loaded, prompts: ["red apple"], seeds: [4], steps: 2 });
    assert.equal(a[0]!.width, 16); // 8 latent pixels × 2 (two-level VAE)
    assert.deepEqual(b[0]!.data, a[0]!.data);
    const init: RgbImage = { width: 16, height: 16, data: new Uint8Array(16 * 16 * 3).fill(200) };
    assert.equal(generate({ model, prompts: ["red apple"], steps: 2, initImages: [init], strength: 0.5 })[0]!.width, 16);
    disposeTextToImageModel(loaded);
  } finally {
    disposeTextToImageModel(model);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("PNG files round-trip and the grid has one labelled cell per image", async () => {
  const dir = mkdtempSync(join(tmpdir(), "samples-"));
  try {
    const imgs: RgbImage[] = [0, 1, 2].map((k) => ({ width: 4, height: 4, data: new Uint8Array(48).map((_, i) => (i * 13 + k * 50) % 256) }));
    const png = await encodePng(imgs[0]!);
    const back = await sharp(png).raw().toBuffer();
    assert.deepEqual(new Uint8Array(back), imgs[0]!.data);
    const big = await sharp(await encodePng(imgs[1]!, 3)).raw().toBuffer({ resolveWithObject: true });
    assert.equal(big.info.width, 12);
    // nearest-neighbour: pixel (5, 7) of the 3× image is pixel (1, 2) of the original
    const o = (7 * 12 + 5) * 3;
    const s = (2 * 4 + 1) * 3;
    assert.deepEqual(Array.from(big.data.subarray(o, o + 3)), Array.from(imgs[1]!.data.subarray(s, s + 3)));
    const out = await writeSamples(dir, imgs, ["grinning face, smileys & emotion", "a <b> & c", "x"], [0, 1, 2], { scale: 8, cols: 2 });
    assert.equal(out.files.length, 3);
    const meta = await sharp(out.grid).metadata();
    // 2 columns of 32 px + 3 gaps of 6; 2 rows of (32 + label + 6) + 6
    assert.equal(meta.width, 2 * 32 + 3 * 6);
    assert.ok(meta.height! > 2 * 32);
    const rt = await readImage(out.files[2]!);
    assert.deepEqual(rt.data, imgs[2]!.data);
    const listed = JSON.parse(readFileSync(join(dir, "samples.json"), "utf8")) as { prompt: string; seed: number }[];
    assert.deepEqual(listed.map((l) => l.seed), [0, 1, 2]);
    await assert.rejects(makeGrid(imgs, ["a"]), /3 images/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.deepEqual(wrapLabel("grinning face, face smiling, smileys & emotion", 14, 2), ["grinning face,", "face smiling,…"]);
  assert.deepEqual(wrapLabel("a b", 10, 3), ["a b"]);
});
