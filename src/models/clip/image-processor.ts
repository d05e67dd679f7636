// transformers' CLIPImageProcessor, step for step, so scores match the reference implementations:
//
//   convert_to_rgb  RGBA → RGB as transformers 4.44: Pillow's convert("RGB") drops alpha
//                   (AlphaMode "white" composites over white instead); RGB passes through
//   resize          shortest edge → size (the long edge int(size · long / short)), Pillow's
//                   resampling (Image.resize: separable, horizontal pass first, 8-bit rounding after
//                   each pass, 22-bit fixed-point weights, filter support scaled by the downscale
//                   factor, i.e. antialiased). Bicubic is Keys' cubic with a = −0.5, support 2.
//   center_crop     top = ⌊(h − crop_h) / 2⌋, left likewise (zero padding when the image is smaller)
//   rescale         float32(x · rescale_factor)                 (numpy: float64 product, cast)
//   normalize       float32((x − mean) / std)                    (float32 arithmetic)
//
// sharp (libvips) does not do this: its cubic kernel is a different fixed-point implementation and
// shrinks large factors with a box prefilter first, so on a 64 → 32 downscale it lands up to several
// 8-bit levels away from Pillow (test/models/clip-model.test.ts measures 6). Hence our
// own resampler. Everything here is plain JS on Uint8Arrays (HWC); the result is NCHW float32.
import { existsSync, readFileSync } from "node:fs";
import { z } from "zod";

/** OpenAI CLIP's normalisation (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD). */
export const OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

/** Pillow's resampling filters by their enum value (Image.Resampling). */
// (Pillow's nearest, 0, goes through another code path and is not reimplemented.)
export type PilResample = "lanczos" | "bilinear" | "bicubic";
const RESAMPLE_BY_ID: Record<number, PilResample> = { 1: "lanczos", 2: "bilinear", 3: "bicubic" };

export interface ClipImageProcessorConfig {
  doConvertRgb: boolean;
  /** RGBA handling of convert_to_rgb (not in preprocessor_config.json; default "drop"). */
  alpha: AlphaMode;
  doResize: boolean;
  /** Resize the shortest edge to this (transformers' size.shortest_edge), or to exactly height × width. */
  size: { shortestEdge: number } | { height: number; width: number };
  resample: PilResample;
  doCenterCrop: boolean;
  cropSize: { height: number; width: number };
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
}

/** CLIPImageProcessor() defaults (224, bicubic, OpenAI mean/std). */
export const DEFAULT_CLIP_IMAGE_PROCESSOR: ClipImageProcessorConfig = {
  doConvertRgb: true,
  alpha: "drop",
  doResize: true,
  size: { shortestEdge: 224 },
  resample: "bicubic",
  doCenterCrop: true,
  cropSize: { height: 224, width: 224 },
  doRescale: true,
  rescaleFactor: 1 / 255,
  doNormalize: true,
  imageMean: [...OPENAI_CLIP_MEAN],
  imageStd: [...OPENAI_CLIP_STD],
};

/** The processor open_clip builds for a square model input (Resize(size, bicubic) + CenterCrop(size)). */
export function squareProcessorConfig(size: number, mean: readonly number[] = OPENAI_CLIP_MEAN, std: readonly number[] = OPENAI_CLIP_STD): ClipImageProcessorConfig {
  return {
    ...DEFAULT_CLIP_IMAGE_PROCESSOR,
    size: { shortestEdge: size },
    cropSize: { height: size, width: size },
    imageMean: [mean[0]!, mean[1]!, mean[2]!],
    imageStd: [std[0]!, std[1]!, std[2]!],
  };
}

const sizeJson = z.union([
  z.number().int().positive(),
  z.object({ shortest_edge: z.number().int().positive() }),
  z.object({ height: z.number().int().positive(), width: z.number().int().positive() }),
]);
const triple = z.union([z.number(), z.array(z.number()).length(3)]);
const processorJson = z.looseObject({
  image_processor_type: z.string().optional(),
  feature_extractor_type: z.string().optional(),
  do_convert_rgb: z.boolean().optional(),
  do_resize: z.boolean().optional(),
  size: sizeJson.optional(),
  resample: z.number().int().optional(),
  do_center_crop: z.boolean().optional(),
  crop_size: sizeJson.optional(),
  do_rescale: z.boolean().optional(),
  rescale_factor: z.number().positive().optional(),
  do_normalize: z.boolean().optional(),
  image_mean: triple.optional(),
  image_std: triple.optional(),
});

/** Reads a preprocessor_config.json object (missing fields take CLIPImageProcessor's defaults). */
export function clipImageProcessorConfigFromJson(json: unknown, source = "preprocessor_config.json"): ClipImageProcessorConfig {
  const parsed = processorJson.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new Error(`${source}: not a valid CLIPImageProcessor config (${issues})`);
  }
  const j = parsed.data;
  const d = DEFAULT_CLIP_IMAGE_PROCESSOR;
  let size: ClipImageProcessorConfig["size"] = d.size;
  if (typeof j.size === "number") size = { shortestEdge: j.size }; // legacy int: the shortest edge (default_to_square=False)
  else if (j.size && "shortest_edge" in j.size) size = { shortestEdge: j.size.shortest_edge };
  else if (j.size && "height" in j.size) size = { height: j.size.height, width: j.size.width };
  let cropSize = d.cropSize;
  if (typeof j.crop_size === "number") cropSize = { height: j.crop_size, width: j.crop_size };
  else if (j.crop_size && "height" in j.crop_size) cropSize = { height: j.crop_size.height, width: j.crop_size.width };
  else if (j.crop_size && "shortest_edge" in j.crop_size) throw new Error(`${source}: crop_size must give height and width (or one number)`);
  let resample = d.resample;
  if (j.resample !== undefined) {
    const r = RESAMPLE_BY_ID[j.resample];
    if (r === undefined) throw new Error(`${source}: resample ${j.resample} is not supported (1 lanczos, 2 bilinear, 3 bicubic)`);
    resample = r;
  }
  const three = (v: number | number[] | undefined, fallback: [number, number, number]): [number, number, number] =>
    v === undefined ? fallback : typeof v === "number" ? [v, v, v] : [v[0]!, v[1]!, v[2]!];
  return {
    doConvertRgb: j.do_convert_rgb ?? d.doConvertRgb,
    alpha: d.alpha,
    doResize: j.do_resize ?? d.doResize,
    size,
    resample,
    doCenterCrop: j.do_center_crop ?? d.doCenterCrop,
    cropSize,
    doRescale: j.do_rescale ?? d.doRescale,
    rescaleFactor: j.rescale_factor ?? d.rescaleFactor,
    doNormalize: j.do_normalize ?? d.doNormalize,
    imageMean: three(j.image_mean, d.imageMean),
    imageStd: three(j.image_std, d.imageStd),
  };
}

export function readClipImageProcessorConfig(path: string): ClipImageProcessorConfig {
  if (!existsSync(path)) throw new Error(`${path}: not found (a CLIPImageProcessor's preprocessor_config.json)`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
  return clipImageProcessorConfigFromJson(json, path);
}

/** An 8-bit image, HWC, with 3 (RGB) or 4 (RGBA) channels. */
export interface Uint8Image {
  width: number;
  height: number;
  channels: 3 | 4;
  data: Uint8Array;
}

function checkImage(img: Uint8Image, where: string): void {
  if (!(img.width > 0 && img.height > 0) || (img.channels !== 3 && img.channels !== 4) || img.data.length !== img.width * img.height * img.channels) {
    throw new Error(`${where}: image ${img.width}×${img.height}×${img.channels} holds ${img.data.length} bytes; expected 8-bit RGB or RGBA, HWC`);
  }
}

/**
 * How RGBA becomes RGB. "drop" is Pillow's Image.convert("RGB") — what transformers 4.44's
 * convert_to_rgb and open_clip's _convert_to_rgb do, and what the clip-reward reference recorded
 * (transparent pixels keep their stored colour, usually black). "white" composites over opaque
 * white with Pillow's Image.alpha_composite arithmetic (what later transformers versions do).
 */
export type AlphaMode = "drop" | "white";

/** RGBA → RGB by `mode` (RGB passes through). */
export function convertToRgb(img: Uint8Image, mode: AlphaMode = "drop"): Uint8Image {
  checkImage(img, "convertToRgb");
  if (img.channels === 3) return img;
  const n = img.width * img.height;
  const out = new Uint8Array(n * 3);
  const src = img.data;
  if (mode === "drop") {
    for (let i = 0; i < n; i++) {
      out[3 * i] = src[4 * i]!; out[3 * i + 1] = src[4 * i + 1]!; out[3 * i + 2] = src[4 * i + 2]!;
    }
    return { width: img.width, height: img.height, channels: 3, data: out };
  }
  // ImagingAlphaComposite with an opaque white destination: 7 extra bits, /255 rounded by shifts
  const PREC = 7;
  const div255 = (a: number) => (((a >>> 8) + a) >>> 8);
  for (let i = 0; i < n; i++) {
    const a = src[4 * i + 3]!;
    if (a === 0) {
      out[3 * i] = 255; out[3 * i + 1] = 255; out[3 * i + 2] = 255;
      continue;
    }
    const outa255 = a * 255 + 255 * (255 - a);
    const coef1 = Math.floor((a * 255 * 255 * (1 << PREC)) / outa255);
    const coef2 = 255 * (1 << PREC) - coef1;
    for (let c = 0; c < 3; c++) {
      const tmp = src[4 * i + c]! * coef1 + 255 * coef2;
      out[3 * i + c] = div255(tmp + (0x80 << PREC)) >>> PREC;
    }
  }
  return { width: img.width, height: img.height, channels: 3, data: out };
}

// ---- Pillow's resampling (libImaging/Resample.c) --------------------------------------------------
// Bicubic is checked against Pillow's output (the clip-reward case); bilinear and lanczos share the
// same coefficient and pass code with Pillow's filter functions but have no Pillow-made reference.

const FILTERS: Record<PilResample, { support: number; f: (x: number) => number }> = {
  bilinear: { support: 1, f: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
  bicubic: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
  lanczos: {
    support: 3,
    f: (x) => {
      const sinc = (v: number) => (v === 0 ? 1 : Math.sin(Math.PI * v) / (Math.PI * v));
      return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
    },
  },
};

const PRECISION_BITS = 32 - 8 - 2;

interface Coeffs { ksize: number; bounds: Int32Array; kk: Int32Array }

/** precompute_coeffs + normalize_coeffs_8bpc for one axis (box = the whole input). */
function precomputeCoeffs(inSize: number, outSize: number, filter: { support: number; f: (x: number) => number }): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(1, scale);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const v = filter.f((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < ksize; x++) {
      const v = x < xmax && ww !== 0 ? w[x]! / ww : x < xmax ? w[x]! : 0;
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v: number): number {
  if (v >= 1 << PRECISION_BITS << 8) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / (1 << PRECISION_BITS));
}

/** Pillow's Image.resize((width, height), filter) of an 8-bit image (any channel count, HWC). */
export function pilResize(img: Uint8Image, width: number, height: number, resample: PilResample = "bicubic"): Uint8Image {
  checkImage(img, "pilResize");
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) throw new Error(`pilResize: target ${width}×${height} must be positive integers`);
  if (width === img.width && height === img.height) return { ...img, data: img.data.slice() };
  const ch = img.channels;
  const filter = FILTERS[resample];
  let cur = img;
  if (width !== img.width) {
    // horizontal pass: every input row
    const { ksize, bounds, kk } = precomputeCoeffs(img.width, width, filter);
    const out = new Uint8Array(width * img.height * ch);
    const src = img.data;
    for (let y = 0; y < img.height; y++) {
      for (let xx = 0; xx < width; xx++) {
        const xmin = bounds[2 * xx]!, xmax = bounds[2 * xx + 1]!;
        const k = xx * ksize;
        for (let c = 0; c < ch; c++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < xmax; x++) ss += src[(y * img.width + x + xmin) * ch + c]! * kk[k + x]!;
          out[(y * width + xx) * ch + c] = clip8(ss);
        }
      }
    }
    cur = { width, height: img.height, channels: ch, data: out };
  }
  if (height !== cur.height) {
    const { ksize, bounds, kk } = precomputeCoeffs(cur.height, height, filter);
    const out = new Uint8Array(width * height * ch);
    const src = cur.data;
    for (let yy = 0; yy < height; yy++) {
      const ymin = bounds[2 * yy]!, ymax = bounds[2 * yy + 1]!;
      const k = yy * ksize;
      for (let x = 0; x < width; x++) {
        for (let c = 0; c < ch; c++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let y = 0; y < ymax; y++) ss += src[((y + ymin) * width + x) * ch + c]! * kk[k + y]!;
          out[(yy * width + x) * ch + c] = clip8(ss);
        }
      }
    }
    cur = { width, height, channels: ch, data: out };
  }
  return cur;
}

/** transformers' get_resize_output_image_size for {shortest_edge} (default_to_square=False): [height, width]. */
export function shortestEdgeSize(height: number, width: number, size: number): [number, number] {
  const short = Math.min(width, height), long = Math.max(width, height);
  const newLong = Math.trunc((size * long) / short);
  return width <= height ? [newLong, size] : [size, newLong];
}

/**
 * transformers' center_crop: offsets top = ⌊(h − crop_h)/2⌋, left = ⌊(w − crop_w)/2⌋; where the image
 * is smaller it is first centred on a zero canvas at ⌈(crop − size)/2⌉, which works out to the same
 * source offset (negative: rows and columns outside the image stay 0).
 */
export function centerCrop(img: Uint8Image, cropHeight: number, cropWidth: number): Uint8Image {
  const ch = img.channels;
  const top = Math.floor((img.height - cropHeight) / 2);
  const left = Math.floor((img.width - cropWidth) / 2);
  if (top === 0 && left === 0 && img.height === cropHeight && img.width === cropWidth) return img;
  const out = new Uint8Array(cropHeight * cropWidth * ch);
  for (let y = 0; y < cropHeight; y++) {
    const srcY = y + top;
    if (srcY < 0 || srcY >= img.height) continue;
    for (let x = 0; x < cropWidth; x++) {
      const srcX = x + left;
      if (srcX < 0 || srcX >= img.width) continue;
      for (let c = 0; c < ch; c++) out[(y * cropWidth + x) * ch + c] = img.data[(srcY * img.width + srcX) * ch + c]!;
    }
  }
  return { width: cropWidth, height: cropHeight, channels: ch, data: out };
}

/** convert_to_rgb → resize → center crop: the 8-bit image the model sees before rescaling. */
export function resizeAndCrop(img: Uint8Image, config: ClipImageProcessorConfig): Uint8Image {
  let cur = config.doConvertRgb ? convertToRgb(img, config.alpha) : img;
  if (cur.channels !== 3) throw new Error("CLIP image processor: a 4-channel image needs do_convert_rgb");
  if (config.doResize) {
    const [h, w] = "shortestEdge" in config.size
      ? shortestEdgeSize(cur.height, cur.width, config.size.shortestEdge)
      : [config.size.height, config.size.width];
    cur = pilResize(cur, w, h, config.resample);
  }
  if (config.doCenterCrop) cur = centerCrop(cur, config.cropSize.height, config.cropSize.width);
  return cur;
}

/** The output side of one processed image. */
export function processedSize(config: ClipImageProcessorConfig): { height: number; width: number } | null {
  if (config.doCenterCrop) return config.cropSize;
  if (config.doResize && "height" in config.size) return config.size;
  return null;
}

/**
 * CLIPImageProcessor.preprocess for a batch: pixel_values as float32 NCHW (all images must come out
 * the same size, which the center crop guarantees).
 */
export function preprocessImages(images: readonly Uint8Image[], config: ClipImageProcessorConfig): { data: Float32Array; shape: [number, number, number, number] } {
  const f = Math.fround;
  const mean = config.imageMean.map(f), std = config.imageStd.map(f);
  let shape: [number, number, number, number] | null = null;
  let data = new Float32Array(0);
  images.forEach((img, i) => {
    checkImage(img, `CLIP image processor, image ${i}`);
    const r = resizeAndCrop(img, config);
    if (shape === null) {
      shape = [images.length, 3, r.height, r.width];
      data = new Float32Array(images.length * 3 * r.height * r.width);
    } else if (shape[2] !== r.height || shape[3] !== r.width) {
      throw new Error(`CLIP image processor: image ${i} came out ${r.width}×${r.height}, the first ${shape[3]}×${shape[2]} (give do_center_crop)`);
    }
    const plane = r.height * r.width;
    const base = i * 3 * plane;
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) {
        let v = r.data[3 * p + c]!;
        if (config.doRescale) v = f(v * config.rescaleFactor);
        if (config.doNormalize) v = f(f(v - mean[c]!) / std[c]!);
        data[base + c * plane + p] = v;
      }
    }
  });
  return { data, shape: shape ?? [0, 3, 0, 0] };
}
