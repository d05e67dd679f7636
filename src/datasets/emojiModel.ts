// The recipe of the shipped emoji base model (models/emoji-base): a pixel-space 32×32 RGB model
// made of the tiny UNet (TINY_UNET_CONFIG: 32/64/64 channels, attention at 16×16 and 8×8), a
// 2-layer CLIP text encoder of width 64 over a CLIP vocabulary pruned to the training captions,
// and DDPM's linear β schedule (1e-4 … 0.02, T = 1000, ε-prediction; predicted x0 clipped to
// [−1, 1] while sampling, as pixel-space DDPM does).
import { scheduleConfig, type ScheduleConfig } from "../diffusion/schedule.js";
import { TINY_CLIP_TEXT_CONFIG, type ClipTextConfig } from "../models/clip/text-model.js";
import type { ClipTokenizer } from "../models/clip/tokenizer.js";
import { createTextToImageModel, type TextToImageModel } from "../models/pipeline.js";
import { TINY_UNET_CONFIG, type UNetConfig } from "../models/unet/config.js";
import { setInitSeed } from "../nn/init.js";
import type { EmojiDataset } from "./emoji.js";
import { pruneClipTokenizer } from "./tokenizer.js";

export const EMOJI_UNET_CONFIG: UNetConfig = { ...TINY_UNET_CONFIG, sampleSize: 32 };

export const EMOJI_SCHEDULE: ScheduleConfig = scheduleConfig({
  betaSchedule: "linear", betaStart: 1e-4, betaEnd: 0.02, numTrainTimesteps: 1000, predictionType: "epsilon",
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
export function createEmojiModel(train: EmojiDataset, seed = 0): TextToImageModel {
  const tokenizer = pruneClipTokenizer(train.items.map((i) => i.caption), { modelMaxLength: 32 });
  setInitSeed(seed);
  return createTextToImageModel({
    unet: EMOJI_UNET_CONFIG,
    textEncoder: emojiTextConfig(tokenizer),
    tokenizer,
    scheduler: EMOJI_SCHEDULE,
    schedulerClass: "DDPMScheduler",
    vae: null,
  });
}

/** Sampling weights giving each base emoji the same total weight (its skin-tone variants share it). */
export function baseEmojiWeights(ds: EmojiDataset): number[] {
  const count = new Map<string, number>();
  for (const it of ds.items) count.set(it.baseName, (count.get(it.baseName) ?? 0) + 1);
  return ds.items.map((it) => 1 / count.get(it.baseName)!);
}
