import { test } from "node:test";
import assert from "node:assert/strict";
import { appealReward, appealScore, appealStatistics, DEFAULT_APPEAL_WEIGHTS } from "../../src/feedback/appeal.js";
import type { RgbImage } from "../../src/sample/generate.js";

/** A w×h white image with the given pixels set. */
function image(w: number, h: number, set: [number, number, [number, number, number]][]): RgbImage {
  const data = new Uint8Array(w * h * 3).fill(255);
  for (const [x, y, rgb] of set) data.set(rgb, (y * w + x) * 3);
  return { width: w, height: h, data };
}

const close = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) < tol, `${a} vs ${b}`);

test("appeal: blank white image scores 0 on every term", () => {
  const s = appealStatistics(image(4, 4, []));
  for (const v of Object.values(s)) close(v, 0, 1e-12); // luma weights sum to 1 up to rounding
});

test("appeal: a red centre pixel on white, by hand", () => {
  const s = appealStatistics(image(3, 3, [[1, 1, [255, 0, 0]]]));
  // luma: red 0.299, white 1; one value in nine deviates by d = 0.701 → std = d·√(1/9·8/9)
  close(s.contrast, 2 * 0.701 * Math.sqrt(8 / 81));
  close(s.saturation, 1 / 9); // red has S = 1, white S = 0
  close(s.sharpness, 1); // |4·0.299 − 4| · 3 = 8.4 → clipped to 1
  close(s.centring, 1); // the foreground's centroid is the centre
  close(appealScore(s), 0.25 * (2 * 0.701 * Math.sqrt(8 / 81) + 1 / 9 + 1 + 1));
});

test("appeal: an off-centre black pixel, by hand", () => {
  const s = appealStatistics(image(4, 4, [[0, 0, [0, 0, 0]]]));
  close(s.contrast, 2 * Math.sqrt((1 / 16) * (15 / 16)));
  close(s.saturation, 0); // black: max = 0 → S = 0; white: S = 0
  close(s.sharpness, 0); // the corner pixel is no interior pixel's 4-neighbour
  // centroid (1/8, 1/8): distance 3/8·√2 from the centre, over √2/2
  close(s.centring, 1 - 0.75);
});

test("appeal: a faint grey centre is not foreground but is a little sharp", () => {
  const s = appealStatistics(image(3, 3, [[1, 1, [250, 250, 250]]]));
  const d = 5 / 255;
  close(s.sharpness, 3 * 4 * d);
  close(s.centring, 0); // 1 − 250/255 < 0.1 → no foreground
  close(s.contrast, 2 * d * Math.sqrt(8 / 81));
});

test("appeal reward: weights, prompt-count check, bad image sizes", async () => {
  const img = image(3, 3, [[1, 1, [255, 0, 0]]]);
  const r = appealReward();
  const [score] = await r.score([img], ["anything"]);
  close(score!, appealScore(appealStatistics(img), DEFAULT_APPEAL_WEIGHTS));
  const onlyCentring = appealReward({ contrast: 0, saturation: 0, sharpness: 0, centring: 2 });
  close((await onlyCentring.score([img], ["x"]))[0]!, 2);
  await assert.rejects(r.score([img], []), /1 images but 0 prompts/);
  await assert.rejects(r.score([{ width: 2, height: 2, data: new Uint8Array(5) }], ["x"]), /holds 5 bytes/);
});
