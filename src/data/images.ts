/**
 * Image decoding (sharp) and the training augmentation of the official recipe:
 * resize (bilinear, shorter side to `resolution`) → center or random crop to resolution² →
 * optional random horizontal flip → CHW float32 scaled to [−1, 1] (ToTensor + Normalize(0.5, 0.5)).
 *
 * Pairs: the official SD1.5 script (SalesforceAIResearch/DiffusionDPO train.py) runs the
 * torchvision transform on jpg_0 and jpg_1 independently, so a random crop or flip may differ
 * between the two images of a pair. The SDXL scripts crop and flip the pair jointly and resize
 * the rejected image to the chosen one's size. We default to the joint version (`pairMode:
 * "joint"`): both images get the same geometry, so the pair differs only in content.
 * `pairMode: "independent"` reproduces the SD1.5 behaviour.
 */
import { readFile } from "node:fs/promises";
import sharp from "sharp";
import { DataError } from "./errors.js";
import type { Rng } from "./random.js";
import type { ImageSource, RawImage } from "./types.js";
import { roundHalfEven } from "../util/rounding.js";

/** Where an image came from, for error messages. */
export interface ImageOrigin {
  source: string;
  row: number | null;
  field: string;
}

/**
 * Decodes encoded bytes or a file into RGB (alpha dropped, grey expanded). Corrupt or truncated
 * data and missing files become a `DataError` naming `origin`.
 */
export async function decodeImage(input: ImageSource, origin: ImageOrigin): Promise<RawImage> {
  let bytes: Uint8Array;
  if (typeof input === "string") {
    try {
      bytes = await readFile(input);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new DataError("missing-file", origin.source, origin.row, origin.field,
        `cannot read image file '${input}' (${code ?? String(e)}); check the path`);
    }
  } else {
    bytes = input;
  }
  if (bytes.length === 0) {
    throw new DataError("corrupt-image", origin.source, origin.row, origin.field, "image is empty (0 bytes)");
  }
  try {
    const { data, info } = await sharp(bytes, { failOn: "warning" })
      .toColourspace("srgb")
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    const what = typeof input === "string" ? `image file '${input}'` : `image bytes (${bytes.length} B)`;
    throw new DataError("corrupt-image", origin.source, origin.row, origin.field,
      `cannot decode ${what}: ${(e as Error).message}; the image is corrupt, truncated or not an image`);
  }
}

/**
 * torchvision `Resize(size)` output size: the shorter side becomes `size`, the longer side
 * `floor(size * long / short)`.
 */
export function resizedSize(width: number, height: number, size: number): { width: number; height: number } {
  if (width <= height) return { width: size, height: Math.floor((size * height) / width) };
  return { width: Math.floor((size * width) / height), height: size };
}

/** Bilinear (triangle-filter, antialiased when shrinking) resize with sharp/libvips. */
export async function resizeImage(img: RawImage, width: number, height: number): Promise<RawImage> {
  if (img.width === width && img.height === height) return img;
  const { data, info } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { kernel: "linear", fit: "fill" })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

// torchvision's center_crop rounds with Python's round().
export { roundHalfEven };

export interface CropBox {
  top: number;
  left: number;
}

/** torchvision CenterCrop offsets (images at least `size` on both sides). */
export function centerCropBox(width: number, height: number, size: number): CropBox {
  return { top: roundHalfEven((height - size) / 2), left: roundHalfEven((width - size) / 2) };
}

/** torchvision RandomCrop offsets: top ~ U{0..h−size}, then left ~ U{0..w−size}. */
export function randomCropBox(width: number, height: number, size: number, rng: Rng): CropBox {
  return { top: rng.int(0, height - size + 1), left: rng.int(0, width - size + 1) };
}

/**
 * Crops `size`×`size` at `box`, optionally mirrors left-right, and writes CHW float32 values
 * (v/255 − 0.5)/0.5 into `out` at `offset`.
 */
export function cropFlipNormalize(img: RawImage, box: CropBox, size: number, flip: boolean, out: Float32Array, offset = 0): void {
  if (box.top < 0 || box.left < 0 || box.top + size > img.height || box.left + size > img.width) {
    throw new Error(`crop ${size}×${size} at (${box.top}, ${box.left}) does not fit a ${img.width}×${img.height} image`);
  }
  const plane = size * size;
  const src = img.data;
  for (let y = 0; y < size; y++) {
    const rowBase = ((box.top + y) * img.width + box.left) * 3;
    for (let x = 0; x < size; x++) {
      const sx = flip ? size - 1 - x : x;
      const s = rowBase + sx * 3;
      const o = offset + y * size + x;
      out[o] = (src[s]! / 255 - 0.5) / 0.5;
      out[o + plane] = (src[s + 1]! / 255 - 0.5) / 0.5;
      out[o + 2 * plane] = (src[s + 2]! / 255 - 0.5) / 0.5;
    }
  }
}

export interface AugmentOptions {
  /** Output side length (SD1.5: 512, SDXL: 1024). */
  resolution: number;
  /** Center crop (official default) or random crop. */
  crop?: "center" | "random";
  /** Random horizontal flip with probability 0.5 (official default: on). */
  flip?: boolean;
  /** Same crop and flip for both images of a pair (default), or independent (official SD1.5). */
  pairMode?: "joint" | "independent";
}

/**
 * What SDXL's micro-conditioning takes from a pair's augmentation (diffusers' SDXL DPO script):
 * the chosen image's size before resizing, [height, width], and the crop's top-left corner
 * [top, left] in the resized image as the network sees it (mirrored when the crop is flipped, as
 * when flipping before cropping).
 */
export interface PairGeometry {
  originalSize: [number, number];
  cropTopLeft: [number, number];
}

function geometryOf(img: RawImage, p: Plan, size: number): PairGeometry {
  return { originalSize: [img.height, img.width], cropTopLeft: [p.box.top, p.flip ? p.width - p.box.left - size : p.box.left] };
}

/** Geometry decided for one image: resize target, crop box, flip. */
interface Plan {
  width: number;
  height: number;
  box: CropBox;
  flip: boolean;
}

function plan(width: number, height: number, o: Required<AugmentOptions>, rng: Rng): Plan {
  const r = resizedSize(width, height, o.resolution);
  const box = o.crop === "random" ? randomCropBox(r.width, r.height, o.resolution, rng) : centerCropBox(r.width, r.height, o.resolution);
  const flip = o.flip ? rng.random() < 0.5 : false;
  return { ...r, box, flip };
}

function withDefaults(o: AugmentOptions): Required<AugmentOptions> {
  if (!Number.isInteger(o.resolution) || o.resolution < 1) {
    throw new Error(`augment: resolution must be a positive integer, got ${o.resolution}`);
  }
  return { resolution: o.resolution, crop: o.crop ?? "center", flip: o.flip ?? true, pairMode: o.pairMode ?? "joint" };
}

/** One image through the full transform; returns CHW float32 of length 3·res². */
export async function augmentImage(img: RawImage, opts: AugmentOptions, rng: Rng): Promise<Float32Array> {
  const o = withDefaults(opts);
  const p = plan(img.width, img.height, o, rng);
  const resized = await resizeImage(img, p.width, p.height);
  const out = new Float32Array(3 * o.resolution * o.resolution);
  cropFlipNormalize(resized, p.box, o.resolution, p.flip, out, 0);
  return out;
}

/**
 * A pair through the transform. Writes chosen then rejected (each 3·res² floats) into `out`
 * at `chosenOffset` / `rejectedOffset` (so a loader can fill the [chosen..., rejected...]
 * batch layout directly).
 */
export async function augmentPair(
  chosen: RawImage,
  rejected: RawImage,
  opts: AugmentOptions,
  rng: Rng,
  out: Float32Array,
  chosenOffset: number,
  rejectedOffset: number,
): Promise<PairGeometry> {
  const o = withDefaults(opts);
  if (o.pairMode === "joint") {
    const p = plan(chosen.width, chosen.height, o, rng);
    const [c, r] = await Promise.all([resizeImage(chosen, p.width, p.height), resizeImage(rejected, p.width, p.height)]);
    cropFlipNormalize(c, p.box, o.resolution, p.flip, out, chosenOffset);
    cropFlipNormalize(r, p.box, o.resolution, p.flip, out, rejectedOffset);
    return geometryOf(chosen, p, o.resolution);
  } else {
    const pc = plan(chosen.width, chosen.height, o, rng);
    const pr = plan(rejected.width, rejected.height, o, rng);
    const [c, r] = await Promise.all([resizeImage(chosen, pc.width, pc.height), resizeImage(rejected, pr.width, pr.height)]);
    cropFlipNormalize(c, pc.box, o.resolution, pc.flip, out, chosenOffset);
    cropFlipNormalize(r, pr.box, o.resolution, pr.flip, out, rejectedOffset);
    return geometryOf(chosen, pc, o.resolution);
  }
}
