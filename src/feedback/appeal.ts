// The "appeal" reward: image statistics, no training, no prompt. A stand-in for an aesthetic
// scorer (the paper's §5.4 labels pairs with the LAION aesthetic predictor too); it rewards
// clear, colourful, crisp, centred pictures on a white background, which is what emoji are.
//
// On the image at its own size, with channel values r, g, b ∈ [0, 1] (byte / 255) and
// luma Y = 0.299 r + 0.587 g + 0.114 b (ITU-R BT.601):
//   contrast   C = 2 · std(Y)                      population std over all pixels; ∈ [0, 1]
//   saturation S = mean((max − min) / max)          HSV saturation, 0 where max = 0; ∈ [0, 1]
//   sharpness  H = min(1, 3 · mean|∇²Y|)           ∇²Y = 4Y(x,y) − Y(x±1,y) − Y(x,y±1) over interior
//                                                  pixels (0 for images under 3×3)
//   centring   E = max(0, 1 − ‖c − (½, ½)‖ / (√2/2))   c = centroid of the foreground pixels
//                                                  (1 − min(r, g, b) > 0.1, i.e. not near-white),
//                                                  pixel centres at ((x + ½)/W, (y + ½)/H);
//                                                  E = 0 when nothing is foreground
//   score = wC·C + wS·S + wH·H + wE·E,  default weights ¼ each, so score ∈ [0, 1].
// The sharpness factor 3 puts real 32×32 emoji (mean|∇²Y| ≈ 0.17 on the held-out set) near the middle
// of the range (H ≈ 0.5); their means are C ≈ 0.49, S ≈ 0.25, E ≈ 0.95.
import type { RgbImage } from "../sample/generate.js";
import { checkRgb } from "./images.js";
import { checkRewardInputs, type RewardModel } from "./reward.js";

export interface AppealStatistics {
  contrast: number;
  saturation: number;
  sharpness: number;
  centring: number;
}

export interface AppealWeights {
  contrast: number;
  saturation: number;
  sharpness: number;
  centring: number;
}

export const DEFAULT_APPEAL_WEIGHTS: AppealWeights = { contrast: 0.25, saturation: 0.25, sharpness: 0.25, centring: 0.25 };

/** Foreground threshold: a pixel is foreground when 1 − min(r, g, b) exceeds it. */
export const APPEAL_FOREGROUND_THRESHOLD = 0.1;
/** Scale of the mean absolute Laplacian in the sharpness term. */
export const APPEAL_SHARPNESS_SCALE = 3;

/** The four statistics of the file comment for one image. */
export function appealStatistics(img: RgbImage): AppealStatistics {
  checkRgb(img, "appeal");
  const { width: w, height: h, data } = img;
  const n = w * h;
  const y = new Float64Array(n);
  let sumY = 0;
  let sumSat = 0;
  let fg = 0, fx = 0, fy = 0;
  for (let i = 0; i < n; i++) {
    const r = data[3 * i]! / 255, g = data[3 * i + 1]! / 255, b = data[3 * i + 2]! / 255;
    const yy = 0.299 * r + 0.587 * g + 0.114 * b;
    y[i] = yy;
    sumY += yy;
    const mx = Math.max(r, g, b), mn = Math.min(r, g, b);
    sumSat += mx > 0 ? (mx - mn) / mx : 0;
    if (1 - mn > APPEAL_FOREGROUND_THRESHOLD) {
      fg++;
      fx += ((i % w) + 0.5) / w;
      fy += (Math.floor(i / w) + 0.5) / h;
    }
  }
  const meanY = sumY / n;
  let varY = 0;
  for (let i = 0; i < n; i++) varY += (y[i]! - meanY) ** 2;
  const contrast = 2 * Math.sqrt(varY / n);
  let lap = 0, count = 0;
  for (let yy = 1; yy < h - 1; yy++) {
    for (let xx = 1; xx < w - 1; xx++) {
      const i = yy * w + xx;
      lap += Math.abs(4 * y[i]! - y[i - 1]! - y[i + 1]! - y[i - w]! - y[i + w]!);
      count++;
    }
  }
  const sharpness = count > 0 ? Math.min(1, (APPEAL_SHARPNESS_SCALE * lap) / count) : 0;
  let centring = 0;
  if (fg > 0) {
    const d = Math.hypot(fx / fg - 0.5, fy / fg - 0.5);
    centring = Math.max(0, 1 - d / (Math.SQRT2 / 2));
  }
  return { contrast, saturation: sumSat / n, sharpness, centring };
}

export function appealScore(stats: AppealStatistics, weights: AppealWeights = DEFAULT_APPEAL_WEIGHTS): number {
  return weights.contrast * stats.contrast + weights.saturation * stats.saturation + weights.sharpness * stats.sharpness + weights.centring * stats.centring;
}

/** The appeal reward (prompts are ignored). */
export function appealReward(weights: AppealWeights = DEFAULT_APPEAL_WEIGHTS): RewardModel {
  const reward: RewardModel = {
    name: "appeal",
    description: "image statistics: ¼ contrast + ¼ saturation + ¼ sharpness + ¼ centring on white (no prompt)",
    async score(images: readonly RgbImage[], prompts: readonly string[]): Promise<number[]> {
      checkRewardInputs(reward, images, prompts);
      return images.map((im) => appealScore(appealStatistics(im), weights));
    },
  };
  return reward;
}
