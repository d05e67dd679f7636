// Image plumbing shared by the rewards: resizing to a model's input size and packing into
// [N, 3, S, S] tensors in [−1, 1].
import { resizeImage } from "../data/images.js";
import type { RgbImage } from "../sample/generate.js";
import { uint8ToTensor } from "../datasets/emoji.js";
import type { Tensor } from "../tensor/index.js";

/** Checks that an image is 8-bit RGB with the size it claims. */
export function checkRgb(img: RgbImage, where: string): void {
  if (!(img.width > 0 && img.height > 0) || img.data.length !== img.width * img.height * 3) {
    throw new Error(`${where}: image is ${img.width}×${img.height} but holds ${img.data.length} bytes; expected ${img.width * img.height * 3} (8-bit RGB, HWC)`);
  }
}

/** The images resized (bilinear, antialiased) to size×size and packed as Uint8 HWC [N, size, size, 3]. */
export async function packResized(images: readonly RgbImage[], size: number, where: string): Promise<Uint8Array> {
  const per = size * size * 3;
  const out = new Uint8Array(images.length * per);
  await Promise.all(images.map(async (img, i) => {
    checkRgb(img, `${where}, image ${i}`);
    const r = img.width === size && img.height === size ? img : await resizeImage({ ...img, channels: 3 }, size, size);
    out.set(r.data, i * per);
  }));
  return out;
}

/** RGB images of any size → [N, 3, size, size] in [−1, 1]. */
export async function imagesAtSize(images: readonly RgbImage[], size: number, where: string): Promise<Tensor> {
  return uint8ToTensor(await packResized(images, size, where), images.length, size);
}
