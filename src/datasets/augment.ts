// Light augmentation for the small emoji models (the category classifier, the alignment reward):
// 32×32 emoji on white are nearly centred, so random flips and small shifts with white fill are
// what keeps these models from memorising pixel positions.
import type { Rng } from "../data/random.js";

/** Random horizontal flip and ±shift-pixel translation (white fill) of Uint8 HWC images, in place. */
export function flipShiftImages(pixels: Uint8Array, count: number, size: number, rng: Rng, shift: number): void {
  const per = size * size * 3;
  const tmp = new Uint8Array(per);
  for (let n = 0; n < count; n++) {
    const img = pixels.subarray(n * per, (n + 1) * per);
    const flip = rng.random() < 0.5;
    const dx = rng.int(-shift, shift + 1);
    const dy = rng.int(-shift, shift + 1);
    tmp.fill(255);
    for (let y = 0; y < size; y++) {
      const sy = y - dy;
      if (sy < 0 || sy >= size) continue;
      for (let x = 0; x < size; x++) {
        let sx = x - dx;
        if (sx < 0 || sx >= size) continue;
        if (flip) sx = size - 1 - sx;
        const o = (y * size + x) * 3;
        const s = (sy * size + sx) * 3;
        tmp[o] = img[s]!;
        tmp[o + 1] = img[s + 1]!;
        tmp[o + 2] = img[s + 2]!;
      }
    }
    img.set(tmp);
  }
}
