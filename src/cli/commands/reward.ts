// `diffusion-dpo reward train`: trains the built-in image–caption alignment reward (a small CLIP,
// src/feedback/alignment.ts) and writes a reward folder that `--reward DIR` loads.
// `diffusion-dpo reward score`: scores image files against a prompt with any reward.
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";
import { ProgressBar } from "../progress.js";

function positiveInt(v: string | undefined, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer, got "${v}"`);
  return n;
}

const train = defineCommand({
  meta: { name: "train", description: "Train the image–caption alignment reward (InfoNCE) and write a reward folder." },
  args: {
    data: { type: "string", description: "Training (image, caption) data: \"emoji\" (the bundled emoji set, its train split)", default: "emoji" },
    out: { type: "string", description: "Output folder (config.json, model.safetensors, tokenizer/)", default: "runs/emoji-reward" },
    steps: { type: "string", description: "Optimisation steps", default: "400" },
    batch: { type: "string", description: "Batch size (distinct emoji per batch)", default: "128" },
    lr: { type: "string", description: "Peak learning rate (AdamW, 50 warm-up steps, cosine decay)", default: "0.002" },
    seed: { type: "string", description: "Seed for initialisation, batches and augmentation", default: "0" },
    json: { type: "boolean", description: "Print one JSON object with the result", default: false },
  },
  async run({ args }) {
    if (args.data !== "emoji") throw new UsageError(`--data ${args.data}: only "emoji" (the bundled emoji set) is supported for reward training`);
    const steps = positiveInt(args.steps, "--steps");
    const batchSize = positiveInt(args.batch, "--batch");
    const lr = Number(args.lr);
    if (!(lr > 0)) throw new UsageError(`--lr must be a positive number, got "${args.lr}"`);
    const seed = Number(args.seed);
    if (!Number.isInteger(seed)) throw new UsageError(`--seed must be an integer, got "${args.seed}"`);
    const { loadEmojiDataset } = await import("../../datasets/emoji.js");
    const { alignmentAccuracy, saveAlignmentModel, trainAlignment } = await import("../../feedback/alignment.js");
    const train = await loadEmojiDataset({ split: "train" });
    const heldout = await loadEmojiDataset({ split: "heldout" });
    const bar = new ProgressBar("reward train");
    let seconds = 0;
    const model = trainAlignment({
      train, steps, batchSize, lr, seed,
      onEvent: (e) => {
        if (e.type === "step") bar.update(e.step, e.total, `loss ${e.loss.toFixed(3)} scale ${e.scale.toFixed(1)}`);
        else seconds = e.seconds;
      },
    });
    bar.done();
    const accuracy = alignmentAccuracy(model, heldout);
    const trainAccuracy = alignmentAccuracy(model, train);
    const training = {
      data: "emoji", steps, batch: batchSize, lr, seed, seconds: Math.round(seconds * 10) / 10,
      trainImages: train.items.length, heldoutImages: heldout.items.length,
      heldoutAccuracy: accuracy, trainAccuracy,
    };
    saveAlignmentModel(args.out, model, { training });
    model.dispose();
    const result = { out: args.out, ...training };
    if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      process.stdout.write(`wrote ${args.out} (${steps} steps, ${training.seconds} s)\n`);
      process.stdout.write(`held-out (${accuracy.count} images): true caption beats a random wrong caption ${(100 * accuracy.randomWrong).toFixed(1)}%, a same-category wrong caption ${(100 * accuracy.sameCategoryWrong).toFixed(1)}%\n`);
    }
  },
});

const score = defineCommand({
  meta: { name: "score", description: "Score image files against a prompt with a reward." },
  args: {
    reward: { type: "string", description: "Reward: alignment, appeal, category, a folder from `reward train`, NAME=PATH for clip, pickscore, hpsv2, aesthetic (weights on disk), or a weighted mix 0.7*pickscore=PATH+0.3*aesthetic=PATH", default: "alignment" },
    prompt: { type: "string", description: "The prompt the images are scored for", required: true },
    json: { type: "boolean", description: "Print one JSON object", default: false },
  },
  async run({ args }) {
    const files = args._.map(String);
    if (files.length === 0) throw new UsageError("give one or more image files after the options");
    const { loadReward } = await import("../../feedback/registry.js");
    const { readImage } = await import("../../sample/png.js");
    const reward = loadReward(args.reward);
    try {
      const images = await Promise.all(files.map((f) => readImage(f)));
      const scores = await reward.score(images, files.map(() => args.prompt));
      if (args.json) process.stdout.write(`${JSON.stringify({ reward: reward.name, prompt: args.prompt, scores: files.map((f, i) => ({ file: f, score: scores[i] })) })}\n`);
      else files.forEach((f, i) => process.stdout.write(`${scores[i]!.toFixed(4)}  ${f}\n`));
    } finally {
      reward.dispose?.();
    }
  },
});

export default defineCommand({
  meta: { name: "reward", description: "Reward models for AI feedback: train the alignment scorer, score images." },
  subCommands: { train, score },
});
