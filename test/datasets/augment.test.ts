import { test } from "node:test";
import assert from "node:assert/strict";
import type { Rng } from "../../src/data/random.js";
import { flipShiftImages } from "../../src/datasets/augment.js";

/** An Rng that replays fixed draws: random() for the flip coin, int() for dx then dy. */
function scripted(randoms: number[], ints: number[]): Rng {
  return { random: () => randoms.shift()!, int: () => ints.shift()! } as unknown as Rng;
}

// a 3×3 RGB image whose pixel (y, x) has all channels = 10·y + x
const image = () => {
  const px = new Uint8Array(27);
  for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) px.fill(10 * y + x, (y * 3 + x) * 3, (y * 3 + x) * 3 + 3);
  return px;
};
const red = (px: Uint8Array) => Array.from({ length: 9 }, (_, i) => px[i * 3]!);

test("flipShiftImages: a flip mirrors each row, a shift moves content and fills white", () => {
  const flipped = image();
  flipShiftImages(flipped, 1, 3, scripted([0.1], [0, 0]), 1);
  assert.deepEqual(red(flipped), [2, 1, 0, 12, 11, 10, 22, 21, 20]);

  const shifted = image();
  flipShiftImages(shifted, 1, 3, scripted([0.9], [1, -1]), 1); // no flip, dx = +1, dy = −1
  assert.deepEqual(red(shifted), [255, 10, 11, 255, 20, 21, 255, 255, 255]);
});
