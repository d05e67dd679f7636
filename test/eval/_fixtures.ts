// Tiny model folders (base, a full "tuned" copy, UNet-only and LoRA variants as the trainer writes
// them), fake rewards, and a small JSONL preference set — for the evaluation tests.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { createTextToImageModel, disposeTextToImageModel, saveModelFolder } from "../../src/models/pipeline.js";
import { TINY_UNET_CONFIG } from "../../src/models/unet/config.js";
import { TINY_CLIP_TEXT_CONFIG } from "../../src/models/clip/text-model.js";
import { writeSafetensorsSync } from "../../src/io/safetensors.js";
import { injectLora, loraMetadata, loraStateDict } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";
import { noGrad, tidy, randn, Generator } from "../../src/tensor/index.js";
import type { RewardModel } from "../../src/feedback/reward.js";
import type { RgbImage } from "../../src/sample/generate.js";

/** An 8×8 pixel-space model with one cross-attention block: a UNet forward costs milliseconds. */
export function tinyModel(seed = 0) {
  setInitSeed(seed);
  return createTextToImageModel({
    unet: {
      ...TINY_UNET_CONFIG, sampleSize: 8, downBlockTypes: ["CrossAttnDownBlock2D"], upBlockTypes: ["CrossAttnUpBlock2D"],
      blockOutChannels: [8], normNumGroups: 4, attentionHeadDim: 2, crossAttentionDim: 16,
    },
    textEncoder: { ...TINY_CLIP_TEXT_CONFIG, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 1, numAttentionHeads: 2, projectionDim: 16 },
  });
}

export interface TinyFolders {
  base: string;
  /** A full model folder whose UNet predicts ε − 0.3 (samples come out brighter). */
  full: string;
  /** The trainer's full-finetune output layout: final/unet/diffusion_pytorch_model.safetensors + training_config.json. */
  unetRun: string;
  /** The trainer's LoRA output: <dir>/pytorch_lora_weights.safetensors (diffusers keys) + training_config.json (lora.alpha). */
  loraDir: string;
  /** The same adapters as one file with lora_adapter_metadata. */
  loraFile: string;
}

export function makeTinyFolders(root: string): TinyFolders {
  const f: TinyFolders = {
    base: join(root, "base"), full: join(root, "tuned-full"), unetRun: join(root, "run-full"),
    loraDir: join(root, "run-lora", "final"), loraFile: join(root, "adapters.safetensors"),
  };
  const m = tinyModel(0);
  saveModelFolder(f.base, m);
  noGrad(() => tidy(() => {
    const bias = m.unet.stateDict().get("conv_out.bias")!;
    bias.copy_(bias.sub(0.3));
  }));
  saveModelFolder(f.full, m);
  mkdirSync(join(f.unetRun, "final", "unet"), { recursive: true });
  writeSafetensorsSync(join(f.unetRun, "final", "unet", "diffusion_pytorch_model.safetensors"), m.unet.stateDict(), { format: "pt" });
  writeFileSync(join(f.unetRun, "final", "training_config.json"), JSON.stringify({ finetune: "full", beta: 5000 }));
  writeFileSync(join(f.unetRun, "metrics.jsonl"), metricsLines(30));
  disposeTextToImageModel(m);

  const l = tinyModel(0);
  injectLora(l.unet, { rank: 2, alpha: 4 });
  noGrad(() => {
    const gen = new Generator(9);
    for (const [k, t] of loraStateDict(l.unet)) if (k.endsWith("lora_B.weight")) tidy(() => t.copy_(randn(t.shape, gen).mul(0.5)));
  });
  mkdirSync(f.loraDir, { recursive: true });
  writeSafetensorsSync(join(f.loraDir, "pytorch_lora_weights.safetensors"), loraStateDict(l.unet, { format: "diffusers" }), { format: "pt" });
  writeFileSync(join(f.loraDir, "training_config.json"), JSON.stringify({ finetune: "lora", lora: { rank: 2, alpha: 4 } }));
  writeSafetensorsSync(f.loraFile, loraStateDict(l.unet), loraMetadata(l.unet));
  disposeTextToImageModel(l);
  return f;
}

/** A metrics log as jsonlMetricsLog writes it: loss from ln 2 down, accuracy up, lr warmup. */
export function metricsLines(n: number): string {
  const lines = [];
  for (let s = 1; s <= n; s++) {
    lines.push(JSON.stringify({
      type: "step", step: s, time: 0, loss: Math.LN2 - 0.004 * s + 0.01 * Math.sin(s), implicitAcc: Math.min(1, 0.5 + 0.012 * s),
      policyMse: 0.1, referenceMse: 0.1, margin: -0.0005 * s, gradNorm: 1, lr: 1e-5 * Math.min(1, s / 10), pairsPerSec: 3, skippedSteps: 0,
    }));
    if (s % 10 === 0) lines.push(JSON.stringify({ type: "checkpoint", step: s, path: `checkpoints/step-${s}`, time: 0 }));
  }
  return `${lines.join("\n")}\n`;
}

/** Mean pixel value in [0, 1]: higher for brighter images. */
export const brightness: RewardModel = {
  name: "brightness",
  description: "mean pixel value (test reward)",
  async score(images: readonly RgbImage[]) {
    return images.map((im) => im.data.reduce((a, b) => a + b, 0) / (im.data.length * 255));
  },
};

/** Scores everything 1: every comparison is a tie. */
export const constant: RewardModel = {
  name: "constant",
  description: "always 1 (test reward: all ties)",
  async score(images: readonly RgbImage[]) {
    return images.map(() => 1);
  },
};

/** A JSONL preference set of n pairs at 8×8 whose chosen image is the brighter one. */
export async function brightPairsJsonl(dir: string, n: number): Promise<string> {
  mkdirSync(join(dir, "img"), { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const px = (v: number) => sharp(Buffer.alloc(8 * 8 * 3, v), { raw: { width: 8, height: 8, channels: 3 } }).png().toFile(join(dir, "img", `${i}-${v}.png`));
    const hi = 150 + 10 * i, lo = 60 + 5 * i;
    await px(hi);
    await px(lo);
    lines.push(JSON.stringify({ prompt: `pair ${i}`, chosen: `img/${i}-${hi}.png`, rejected: `img/${i}-${lo}.png` }));
  }
  const path = join(dir, "pairs.jsonl");
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}
