// Sizes candidate emoji UNet layouts before a long pretraining: parameter count and the time of a
// pretraining step (batch 32, 32×32) and of a UNet forward at the DPO step's batch, at the current
// thread count.
//
//   DDPO_THREADS=1 node --import tsx scripts/perf/arch-probe.ts [steps]
import { loadEmojiDataset } from "../../src/datasets/emoji.js";
import { baseEmojiWeights, createRecipeModel } from "../../src/datasets/emojiModel.js";
import type { UNetConfig } from "../../src/models/unet/config.js";
import { Generator, noGrad, randint, randn, tidy } from "../../src/tensor/index.js";
import { encodePrompts } from "../../src/models/pipeline.js";
import { pretrain, pretrainModelFrom } from "../../src/train/pretrain.js";

const steps = Number(process.argv[2] ?? 6);
const train = await loadEmojiDataset({ split: "train", size: 32 });
const captions = train.items.map((i) => i.caption);
const four = (channels: number[], attnFrom: number): Partial<UNetConfig> => ({
  blockOutChannels: channels,
  downBlockTypes: channels.map((_, i) => (i >= attnFrom ? "CrossAttnDownBlock2D" : "DownBlock2D")),
  upBlockTypes: channels.map((_, i) => (channels.length - 1 - i >= attnFrom ? "CrossAttnUpBlock2D" : "UpBlock2D")),
});
const layouts: Record<string, Partial<UNetConfig>> = {
  shipped: {},
  "32/64/128/256 attn≥8×8": four([32, 64, 128, 256], 2),
  "32/64/128/192 attn≥16×16": four([32, 64, 128, 192], 1),
  "32/64/128/256 attn≥16×16": four([32, 64, 128, 256], 1),
};
for (const [name, unet] of Object.entries(layouts)) {
  const t2i = createRecipeModel(captions, { seed: 0, size: 32, unet });
  const model = pretrainModelFrom(t2i);
  const r = pretrain({
    model, data: { pixels: train.pixels, captions, size: 32, weights: baseEmojiWeights(train) },
    steps: steps + 1, batchSize: 32, lr: 1e-3, warmupSteps: 1, lrSchedule: "cosine", emaDecay: 0.995, promptDropout: 0.1, seed: 0,
    checkpointEvery: 0, logEvery: 1, onEvent: () => {},
  });
  const fwd: number[] = [];
  const gen = new Generator(0);
  noGrad(() => {
    for (let i = 0; i < 5; i++) tidy(() => {
      const x = randn([16, 3, 32, 32], gen);
      const t = randint(0, 1000, [16], gen);
      const c = encodePrompts(t2i, captions.slice(0, 16));
      const s = performance.now();
      t2i.unet.forward(x, t, c);
      fwd.push(performance.now() - s);
    });
  });
  fwd.sort((a, b) => a - b);
  console.log(`${name}: unet ${t2i.unet.numParameters().toLocaleString()} params, pretrain ${(r.seconds / (steps + 1) * 1000).toFixed(0)} ms/step (incl. first), forward b16 median ${fwd[2]!.toFixed(0)} ms`);
}
