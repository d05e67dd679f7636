// 8-bit RGB pixels ↔ the float image tensors the models take: one conversion each way, used by
// sampling, the data sets, the rewards, validation grids and pretraining. Pixel p ∈ {0..255} maps
// to p/127.5 − 1 ∈ [−1, 1] (the diffusion pixel range); back, x ↦ round(clamp((x + 1)/2, 0, 1)·255).
import { tensor } from "./ops.js";
import { tidy, type Tensor } from "./tensor.js";

/** An 8-bit RGB image, rows top to bottom, HWC. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** `count` uint8 HWC images of height × width packed in `pixels` → float [count, 3, height, width] in [−1, 1]. */
export function pixelsToTensor(pixels: Uint8Array, count: number, height: number, width: number): Tensor {
  return tidy(() => tensor(pixels, [count, height, width, 3]).to("f32").permute([0, 3, 1, 2]).div(127.5).sub(1).contiguous());
}

/** [N, 3, H, W] in [−1, 1] → the N images' uint8 HWC bytes, packed. */
export function tensorToPixels(x: Tensor): Uint8Array {
  if (x.ndim !== 4 || x.shape[1] !== 3) throw new Error(`tensorToPixels: expected [N, 3, H, W], got [${x.shape.join(", ")}]`);
  return tidy(() => x.add(1).div(2).clamp(0, 1).mul(255).round().permute([0, 2, 3, 1]).contiguous().to("u8").data()) as Uint8Array;
}

/** RGB images (all one size) → [N, 3, H, W] in [−1, 1]. */
export function imagesToTensor(images: RgbImage[]): Tensor {
  const { width, height } = images[0]!;
  const per = width * height * 3;
  const buf = new Uint8Array(images.length * per);
  images.forEach((im, i) => {
    if (im.width !== width || im.height !== height || im.data.length !== per) {
      throw new Error(`image ${i} is ${im.width}×${im.height}; all images must be ${width}×${height} RGB`);
    }
    buf.set(im.data, i * per);
  });
  return pixelsToTensor(buf, images.length, height, width);
}

/** [N, 3, H, W] in [−1, 1] → RGB images. */
export function tensorToImages(x: Tensor): RgbImage[] {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  if (c !== 3) throw new Error(`tensorToImages: expected 3 channels, got ${c}`);
  const bytes = tensorToPixels(x);
  const per = h * w * 3;
  return Array.from({ length: n }, (_, i) => ({ width: w, height: h, data: bytes.slice(i * per, (i + 1) * per) }));
}
