// The recipe of the shipped emoji base model (models/emoji-base): a pixel-space 32×32 RGB model
// made of the tiny UNet (TINY_UNET_CONFIG: 32/64/64 channels, attention at 16×16 and 8×8), a
// 2-layer CLIP text encoder of width 64 over a CLIP vocabulary pruned to the training captions,
// and DDPM's linear β schedule (1e-4 … 0.02, T = 1000; predicted x0 clipped to [−1, 1] while
// sampling, as pixel-space DDPM does) with v-prediction.
//
// Why v and not ε: the sampler's x0 estimate from an ε-prediction is (x_t − √(1−ᾱ)·ε̂)/√ᾱ, so the
// network's ε error is multiplied by √((1−ᾱ_t)/ᾱ_t) — ×6 at t = 600, ×59 at t = 900. A small UNet
// trained for minutes cannot copy the input noise more precisely than MSE ≈ 0.003, which becomes
// an x0 error of std ≈ 3 at t = 900: the first DDIM steps see colour noise, clip it to ±1 and keep
// it (the first shipped model, trained with ε at loss 0.04, sampled nothing but noise). With v,
// x0 = √ᾱ·x_t − √(1−ᾱ)·v̂, so the x0 error never exceeds the v error.
import { scheduleConfig, type ScheduleConfig } from "../diffusion/schedule.js";
import { TINY_CLIP_TEXT_CONFIG, type ClipTextConfig } from "../models/clip/text-model.js";
import type { ClipTokenizer } from "../models/clip/tokenizer.js";
import { createTextToImageModel, type TextToImageModel } from "../models/pipeline.js";
import { TINY_UNET_CONFIG, type UNetConfig } from "../models/unet/config.js";
import { setInitSeed } from "../nn/init.js";
import type { EmojiDataset } from "./emoji.js";
import { pruneClipTokenizer } from "./tokenizer.js";

export const EMOJI_UNET_CONFIG: UNetConfig = { ...TINY_UNET_CONFIG, sampleSize: 32 };

/**
 * UNet layouts for the emoji recipe. "tiny" is the shipped model's. "deep" adds a 4×4 level and
 * widens the low resolutions (32/64/128/256 channels) with cross-attention only at 8×8 and 4×4:
 * 16.1 M parameters against 1.7 M for the same step time, because the 16×16 self-attention the
 * tiny layout has costs as much as everything the deep one adds (scripts/perf/arch-probe.ts).
 */
export const EMOJI_UNET_LAYOUTS: Record<"tiny" | "deep", Partial<UNetConfig>> = {
  tiny: {},
  deep: {
    blockOutChannels: [32, 64, 128, 256],
    downBlockTypes: ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    upBlockTypes: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
  },
};

export const EMOJI_SCHEDULE: ScheduleConfig = scheduleConfig({
  betaSchedule: "linear", betaStart: 1e-4, betaEnd: 0.02, numTrainTimesteps: 1000, predictionType: "v_prediction",
  clipSample: true, clipSampleRange: 1, stepsOffset: 0,
});

export function emojiTextConfig(tokenizer: ClipTokenizer): ClipTextConfig {
  return {
    ...TINY_CLIP_TEXT_CONFIG,
    vocabSize: tokenizer.vocabSize,
    maxPositionEmbeddings: tokenizer.modelMaxLength,
    bosTokenId: tokenizer.bosId,
    eosTokenId: tokenizer.eosId,
    padTokenId: tokenizer.padId,
  };
}

/** A freshly initialised emoji model whose tokenizer covers the training captions. */
export function createEmojiModel(train: EmojiDataset, seed = 0, layout: keyof typeof EMOJI_UNET_LAYOUTS = "tiny"): TextToImageModel {
  return createRecipeModel(train.items.map((i) => i.caption), { seed, size: train.size, unet: EMOJI_UNET_LAYOUTS[layout] });
}

/**
 * The emoji recipe for any captions and image size (a multiple of 4): pixel-space TINY UNet, tiny
 * CLIP text encoder over the CLIP vocabulary pruned to `captions`, EMOJI_SCHEDULE.
 */
export function createRecipeModel(captions: string[], opts: { seed?: number; size?: number; unet?: Partial<UNetConfig> } = {}): TextToImageModel {
  const size = opts.size ?? 32;
  const unet: UNetConfig = { ...EMOJI_UNET_CONFIG, ...opts.unet, sampleSize: size };
  const factor = 2 ** (unet.blockOutChannels.length - 1);
  if (!Number.isInteger(size) || size < factor || size % factor !== 0) throw new Error(`model size must be a multiple of ${factor} (the UNet halves it ${unet.blockOutChannels.length - 1} times), got ${size}`);
  const tokenizer = pruneClipTokenizer(captions, { modelMaxLength: 32 });
  setInitSeed(opts.seed ?? 0);
  return createTextToImageModel({
    unet,
    textEncoder: emojiTextConfig(tokenizer),
    tokenizer,
    scheduler: EMOJI_SCHEDULE,
    schedulerClass: "DDIMScheduler",
    vae: null,
  });
}

/** Sampling weights giving each base emoji the same total weight (its skin-tone variants share it). */
export function baseEmojiWeights(ds: EmojiDataset): number[] {
  const count = new Map<string, number>();
  for (const it of ds.items) count.set(it.baseName, (count.get(it.baseName) ?? 0) + 1);
  return ds.items.map((it) => 1 / count.get(it.baseName)!);
}
