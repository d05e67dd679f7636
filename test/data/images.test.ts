import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import sharp from "sharp";
import {
  augmentImage,
  augmentPair,
  centerCropBox,
  cropFlipNormalize,
  decodeImage,
  resizedSize,
  roundHalfEven,
} from "../../src/data/images.js";
import { DataError } from "../../src/data/errors.js";
import { Rng } from "../../src/data/random.js";
import type { RawImage } from "../../src/data/types.js";

/** Same formula as scripts/golden/data/augment.py. */
function pattern(w: number, h: number): RawImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      data[i] = Math.floor((x * 255) / (w - 1));
      data[i + 1] = Math.floor((y * 255) / (h - 1));
      data[i + 2] = Math.floor((x * y * 255) / ((w - 1) * (h - 1)));
    }
  }
  return { width: w, height: h, channels: 3, data };
}

async function png(img: RawImage): Promise<Uint8Array> {
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).png().toBuffer();
}

interface GoldenCase { width: number; height: number; resolution: number; flip: boolean; resized: [number, number]; crop: [number, number]; values: number[] }
const golden = JSON.parse(readFileSync("test/golden/data/augment.json", "utf8")) as { cases: GoldenCase[] };

test("resize size and center crop offsets match torchvision (golden)", () => {
  for (const c of golden.cases) {
    const r = resizedSize(c.width, c.height, c.resolution);
    assert.deepEqual([r.width, r.height], c.resized);
    const box = centerCropBox(r.width, r.height, c.resolution);
    assert.deepEqual([box.top, box.left], c.crop, `case ${c.width}x${c.height}`);
  }
  // Python's round: halves to even
  assert.equal(roundHalfEven(0.5), 0);
  assert.equal(roundHalfEven(1.5), 2);
  assert.equal(roundHalfEven(2.5), 2);
  assert.equal(roundHalfEven(2.6), 3);
});

test("decode + resize + crop + normalise agrees with PIL bilinear + torch (golden)", async () => {
  for (const c of golden.cases) {
    const bytes = await png(pattern(c.width, c.height));
    const img = await decodeImage(bytes, { source: "mem", row: 0, field: "jpg_0" });
    assert.equal(img.width, c.width);
    // flip decided by the rng: find a seed whose first draw gives the golden's flip
    let seed = 0;
    for (;; seed++) if ((new Rng(seed).random() < 0.5) === c.flip) break;
    const out = await augmentImage(img, { resolution: c.resolution, crop: "center", flip: true }, new Rng(seed));
    assert.equal(out.length, c.values.length);
    let maxErr = 0;
    let sumErr = 0;
    for (let i = 0; i < out.length; i++) {
      const e = Math.abs(out[i]! - c.values[i]!);
      maxErr = Math.max(maxErr, e);
      sumErr += e;
    }
    // libvips and PIL implement the same triangle filter but round differently:
    // within 1 grey level per pixel (2/255 after scaling to [−1, 1]), and < 0.2 level on average
    // (measured: max 1 level, mean ≤ 0.1 level).
    assert.ok(maxErr <= 2 / 255 + 1e-5, `${c.width}x${c.height}: max error ${maxErr}`);
    assert.ok(sumErr / out.length < (0.2 * 2) / 255, `${c.width}x${c.height}: mean error ${sumErr / out.length}`);
  }
});

test("no resize, no flip: exact values (v/255 − 0.5)/0.5 in CHW", () => {
  const img = pattern(5, 4);
  const out = new Float32Array(3 * 4 * 4);
  cropFlipNormalize(img, { top: 0, left: 1 }, 4, false, out);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 4; y++) {
      for (let x = 0; x < 4; x++) {
        const v = img.data[(y * 5 + x + 1) * 3 + c]!;
        assert.equal(out[c * 16 + y * 4 + x], Math.fround(v / 127.5 - 1));
      }
    }
  }
  const flipped = new Float32Array(3 * 16);
  cropFlipNormalize(img, { top: 0, left: 1 }, 4, true, flipped);
  for (let c = 0; c < 3; c++) for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) {
    assert.equal(flipped[c * 16 + y * 4 + x], out[c * 16 + y * 4 + (3 - x)]);
  }
  assert.ok(Math.min(...out) >= -1 && Math.max(...out) <= 1);
});

test("joint pair mode shares crop and flip; independent mode does not have to", async () => {
  const a = pattern(24, 16);
  // rejected = same image: with joint geometry both outputs must be identical
  const res = 12;
  const n = 3 * res * res;
  let sawFlip = false;
  let sawDifferent = false;
  for (let seed = 0; seed < 16; seed++) {
    const out = new Float32Array(2 * n);
    await augmentPair(a, a, { resolution: res, crop: "random", flip: true, pairMode: "joint" }, new Rng(seed), out, 0, n);
    assert.deepEqual(out.subarray(0, n), out.subarray(n));
    const single = await augmentImage(a, { resolution: res, crop: "random", flip: true }, new Rng(seed));
    assert.deepEqual(out.subarray(0, n), single, "the pair's geometry is the chosen image's");
    const ind = new Float32Array(2 * n);
    await augmentPair(a, a, { resolution: res, crop: "random", flip: true, pairMode: "independent" }, new Rng(seed), ind, 0, n);
    if (!ind.subarray(0, n).every((v, i) => v === ind[n + i])) sawDifferent = true;
    const unflipped = await augmentImage(a, { resolution: res, crop: "random", flip: false }, new Rng(seed));
    if (!unflipped.every((v, i) => v === single[i])) sawFlip = true;
  }
  assert.ok(sawDifferent, "independent mode draws its own crop/flip per image");
  assert.ok(sawFlip);
  // a rejected image of another size is resized to the chosen one's size in joint mode
  const out = new Float32Array(2 * n);
  await augmentPair(a, pattern(30, 40), { resolution: res, pairMode: "joint" }, new Rng(1), out, 0, n);
  assert.ok(out.every((v) => Number.isFinite(v) && v >= -1 && v <= 1));
});

test("same seed → same augmentation; different seeds → different random crops", async () => {
  const img = pattern(40, 20);
  const o = { resolution: 16, crop: "random" as const, flip: true };
  const x1 = await augmentImage(img, o, new Rng(7));
  const x2 = await augmentImage(img, o, new Rng(7));
  assert.deepEqual(x1, x2);
  let differs = false;
  for (let s = 8; s < 16 && !differs; s++) {
    const y = await augmentImage(img, o, new Rng(s));
    differs = !y.every((v, i) => v === x1[i]);
  }
  assert.ok(differs);
});

test("corrupt, truncated and missing images raise DataError naming row and field", async () => {
  const jpeg = await sharp(pattern(32, 32).data, { raw: { width: 32, height: 32, channels: 3 } }).jpeg().toBuffer();
  const ok = await decodeImage(jpeg, { source: "s.parquet", row: 3, field: "jpg_1" });
  assert.equal(ok.width, 32);
  const truncated = jpeg.subarray(0, Math.floor(jpeg.length / 2));
  await assert.rejects(decodeImage(truncated, { source: "s.parquet", row: 3, field: "jpg_1" }), (e: unknown) => {
    assert.ok(e instanceof DataError);
    assert.equal(e.reason, "corrupt-image");
    assert.equal(e.row, 3);
    assert.equal(e.field, "jpg_1");
    assert.match(e.message, /s\.parquet, row 3, field 'jpg_1'/);
    return true;
  });
  await assert.rejects(decodeImage(new TextEncoder().encode("not an image"), { source: "x", row: 0, field: "jpg_0" }), /corrupt|decode/);
  await assert.rejects(decodeImage(new Uint8Array(0), { source: "x", row: 0, field: "jpg_0" }), DataError);
  await assert.rejects(decodeImage("/nonexistent/a.png", { source: "d", row: 2, field: "w/a.png" }), (e: unknown) =>
    e instanceof DataError && e.reason === "missing-file" && /ENOENT/.test(e.message));
});
