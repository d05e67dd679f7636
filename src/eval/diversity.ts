// Diversity: does alignment collapse a prompt's samples onto one image?
//
// Feature space: the image box-filtered (area average) down to at most 16×16 RGB, values in
// [0, 1]; distance = root-mean-square difference of two feature vectors (L2 / √dim), so 0 means
// identical and 1 means black vs white everywhere. Downsampling keeps layout and colour and drops
// pixel noise, so two renders of one composition are close. (The RewardModel contract exposes no
// image embedding; a caller with one can pass its own `features`.)
//
// Per prompt with S ≥ 2 seeds:
//   spread(model)  = mean over the S(S−1)/2 seed pairs of d(x_i, x_j)   for the base and the tuned model
//   tunedToBase    = mean over seeds of d(tuned_s, base_s)               (same seed, same start noise)
// The summary averages each over prompts. A tuned spread well below the base's signals collapse;
// tunedToBase says how far tuning moved the samples.
import type { RgbImage } from "../sample/generate.js";

export type FeatureFn = (image: RgbImage) => Float32Array;

/** Area-average downsampling to at most `side`×`side` (integer block sizes), RGB in [0, 1]. */
export function pixelFeatures(image: RgbImage, side = 16): Float32Array {
  const fw = Math.max(1, Math.ceil(image.width / side));
  const fh = Math.max(1, Math.ceil(image.height / side));
  const w = Math.floor(image.width / fw);
  const h = Math.floor(image.height / fh);
  const out = new Float32Array(w * h * 3);
  const norm = 1 / (fw * fh * 255);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let dy = 0; dy < fh; dy++) {
          const row = (y * fh + dy) * image.width;
          for (let dx = 0; dx < fw; dx++) s += image.data[(row + x * fw + dx) * 3 + c]!;
        }
        out[(y * w + x) * 3 + c] = s * norm;
      }
    }
  }
  return out;
}

/** Root-mean-square difference of two feature vectors of one length. */
export function rmsDistance(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`diversity: feature vectors differ in length (${a.length} vs ${b.length}); all images must have one size`);
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return Math.sqrt(s / a.length);
}

/** Mean distance over all unordered pairs (NaN for fewer than 2 items). */
export function meanPairwiseDistance(features: Float32Array[]): number {
  let s = 0;
  let n = 0;
  for (let i = 0; i < features.length; i++) {
    for (let j = i + 1; j < features.length; j++) {
      s += rmsDistance(features[i]!, features[j]!);
      n++;
    }
  }
  return n === 0 ? Number.NaN : s / n;
}

export interface PromptDiversity {
  prompt: string;
  seeds: number;
  base: number;
  tuned: number;
  tunedToBase: number;
}

export interface DiversityResult {
  /** Mean over prompts of the base model's spread across seeds. */
  base: number;
  tuned: number;
  /** Mean over prompts and seeds of d(tuned_s, base_s). */
  tunedToBase: number;
  /** A name for the feature space, for the report. */
  feature: string;
  perPrompt: PromptDiversity[];
}

/** Diversity over prompts, each with its base and tuned images in the same seed order. */
export function diversity(
  groups: readonly { prompt: string; base: RgbImage[]; tuned: RgbImage[] }[],
  opts: { features?: FeatureFn; featureName?: string } = {},
): DiversityResult {
  const feat = opts.features ?? ((im: RgbImage) => pixelFeatures(im));
  const perPrompt: PromptDiversity[] = [];
  for (const g of groups) {
    if (g.base.length !== g.tuned.length) throw new Error(`diversity: prompt "${g.prompt}" has ${g.base.length} base and ${g.tuned.length} tuned images; give one of each per seed`);
    const fb = g.base.map(feat);
    const ft = g.tuned.map(feat);
    const cross = fb.map((b, i) => rmsDistance(b, ft[i]!));
    perPrompt.push({
      prompt: g.prompt,
      seeds: fb.length,
      base: meanPairwiseDistance(fb),
      tuned: meanPairwiseDistance(ft),
      tunedToBase: cross.reduce((a, b) => a + b, 0) / Math.max(1, cross.length),
    });
  }
  const avg = (f: (p: PromptDiversity) => number): number => {
    const v = perPrompt.map(f).filter((x) => Number.isFinite(x));
    return v.length === 0 ? Number.NaN : v.reduce((a, b) => a + b, 0) / v.length;
  };
  return {
    base: avg((p) => p.base),
    tuned: avg((p) => p.tuned),
    tunedToBase: avg((p) => p.tunedToBase),
    feature: opts.featureName ?? (opts.features ? "custom" : "rgb-area-16x16-rms"),
    perPrompt,
  };
}
