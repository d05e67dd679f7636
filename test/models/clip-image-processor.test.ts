// The CLIPImageProcessor geometry by hand: transformers' output size for shortest_edge, center crop
// offsets (and zero padding when the crop is larger), and the resampler on inputs with a closed form.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  centerCrop, clipImageProcessorConfigFromJson, convertToRgb, pilResize, shortestEdgeSize, type Uint8Image,
} from "../../src/models/clip/image-processor.js";

const img = (width: number, height: number, fill: (x: number, y: number) => number): Uint8Image => {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.fill(fill(x, y), (y * width + x) * 3, (y * width + x) * 3 + 3);
  return { width, height, channels: 3, data };
};

test("shortest-edge size: the short side becomes size, the long side int(size · long / short)", () => {
  assert.deepEqual(shortestEdgeSize(300, 200, 224), [336, 224]); // [h, w]: 224·300/200 = 336
  assert.deepEqual(shortestEdgeSize(200, 301, 224), [224, 337]); // 224·301/200 = 337.12 → 337
  assert.deepEqual(shortestEdgeSize(64, 64, 32), [32, 32]);
});

test("center crop: offsets ⌊(size − crop)/2⌋; a smaller image sits at ⌈(crop − size)/2⌉ on zeros", () => {
  const src = img(5, 4, (x, y) => 10 * y + x);
  const c = centerCrop(src, 2, 3); // top ⌊2/2⌋ = 1, left ⌊2/2⌋ = 1
  assert.deepEqual([...c.data].filter((_, i) => i % 3 === 0), [11, 12, 13, 21, 22, 23]);
  const odd = centerCrop(img(4, 4, (x, y) => 10 * y + x), 3, 3); // top = left = ⌊1/2⌋ = 0
  assert.deepEqual([...odd.data].filter((_, i) => i % 3 === 0), [0, 1, 2, 10, 11, 12, 20, 21, 22]);
  const pad = centerCrop(img(2, 2, (x, y) => 1 + 10 * y + x), 3, 3); // image at rows/cols 1..2
  assert.deepEqual([...pad.data].filter((_, i) => i % 3 === 0), [0, 0, 0, 0, 1, 2, 0, 11, 12]);
});

test("resampling: a constant image stays constant under every filter, up and down", () => {
  for (const filter of ["bicubic", "bilinear", "lanczos"] as const) {
    for (const [w, h] of [[7, 5], [64, 40], [3, 3]]) {
      const out = pilResize(img(17, 11, () => 137), w!, h!, filter);
      assert.ok(out.data.every((v) => v === 137), `${filter} ${w}×${h}`);
    }
  }
  // bicubic overshoot is clipped to 0..255 (a hard edge upscaled)
  const edge = pilResize(img(4, 1, (x) => (x < 2 ? 0 : 255)), 16, 1, "bicubic");
  assert.ok(edge.data.every((v) => v >= 0 && v <= 255));
  assert.equal(edge.data[0], 0);
  assert.equal(edge.data[edge.data.length - 1], 255);
});

test("alpha: drop keeps the stored colour; white composites with Pillow's rounding", () => {
  const rgba: Uint8Image = { width: 3, height: 1, channels: 4, data: new Uint8Array([10, 20, 30, 0, 10, 20, 30, 255, 0, 0, 0, 128]) };
  assert.deepEqual([...convertToRgb(rgba).data], [10, 20, 30, 10, 20, 30, 0, 0, 0]);
  // black at a = 128 over white: outa255 = 128·255 + 255·127 = 65025, coef1 = ⌊128·255²·128 / 65025⌋ = 16384,
  // coef2 = 255·128 − 16384 = 16256; tmp = 255·16256 + (128 << 7) = 4161664; ((tmp >> 8) + tmp) >> 8 = 16320;
  // >> 7 = 127. Transparent → white; opaque → itself
  assert.deepEqual([...convertToRgb(rgba, "white").data], [255, 255, 255, 10, 20, 30, 127, 127, 127]);
});

test("preprocessor_config.json: legacy int sizes, defaults, unsupported resample named", () => {
  const c = clipImageProcessorConfigFromJson({ size: 224, crop_size: 224 });
  assert.deepEqual(c.size, { shortestEdge: 224 });
  assert.deepEqual(c.cropSize, { height: 224, width: 224 });
  assert.equal(c.resample, "bicubic");
  assert.throws(() => clipImageProcessorConfigFromJson({ resample: 0 }, "x/preprocessor_config.json"), /x\/preprocessor_config\.json: resample 0 is not supported/);
});
