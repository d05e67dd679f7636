// `diffusion-dpo pairs`: sample K candidate images per prompt from a model into a preference
// store and pair them (src/feedback/pairs.ts); `diffusion-dpo label` then labels the pairs.
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";
import { ProgressBar } from "../progress.js";
import type { TextToImageModel } from "../../models/pipeline.js";

function int(v: string | undefined, flag: string, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be an integer ≥ ${min}, got "${v}"`);
  return n;
}

export default defineCommand({
  meta: { name: "pairs", description: "Sample K images per prompt (recorded seeds) into a preference store and pair them, for AI or human labelling." },
  args: {
    model: {
      type: "string", default: "models/emoji-base",
      description: "Model folder (diffusers layout), or a training run (its final LoRA/UNet on its base model): sampling from the current policy for on-policy rounds",
    },
    base: { type: "string", description: "With --model RUN: the base model folder (default: the one the run's training config names)" },
    prompts: { type: "string", description: "Prompt file: one prompt per line, or a TSV with a Prompt column (PartiPrompts)", required: true },
    db: { type: "string", description: "Preference store (SQLite file; created when missing)", default: "runs/pairs.sqlite" },
    k: { type: "string", description: "Candidates per prompt (≥ 2)", default: "4" },
    pairing: { type: "string", description: "all: every two candidates (K(K−1)/2 pairs); consecutive: (0,1), (2,3), …", default: "all" },
    limit: { type: "string", description: "Use only the first N prompts (0: all)", default: "0" },
    seed: { type: "string", description: "Base seed; candidate j of prompt p gets hash(seed, p, j)", default: "0" },
    steps: { type: "string", description: "Sampler steps", default: "50" },
    guidance: { type: "string", description: "Classifier-free guidance scale", default: "3" },
    sampler: { type: "string", description: "Sampler (ddim, ddpm, euler, euler_ancestral, dpmpp_2m; default: the model folder's scheduler class, as in diffusers)" },
    batch: { type: "string", description: "Images per forward pass (stored after each)", default: "16" },
    json: { type: "boolean", description: "Print one JSON object with the summary", default: false },
  },
  async run({ args }) {
    const { existsSync } = await import("node:fs");
    const { join, resolve } = await import("node:path");
    const k = int(args.k, "--k", 2);
    const steps = int(args.steps, "--steps", 1);
    const seed = int(args.seed, "--seed", 0);
    const batchSize = int(args.batch, "--batch", 1);
    const limit = int(args.limit, "--limit", 0);
    const guidance = Number(args.guidance);
    if (!Number.isFinite(guidance)) throw new UsageError(`--guidance must be a number, got "${args.guidance}"`);
    if (args.pairing !== "all" && args.pairing !== "consecutive") throw new UsageError(`--pairing must be "all" or "consecutive", got "${args.pairing}"`);
    const { isSamplerName, SAMPLER_NAMES } = await import("../../diffusion/samplers/registry.js");
    if (args.sampler !== undefined && !isSamplerName(args.sampler)) throw new UsageError(`--sampler ${args.sampler} is unknown; use one of ${SAMPLER_NAMES.join(", ")}`);
    if (!existsSync(args.prompts)) throw new UsageError(`--prompts ${args.prompts}: no such file`);
    if (!existsSync(args.model)) throw new UsageError(`--model ${args.model}: no such model folder`);
    const { readPrompts } = await import("../../eval/prompts.js");
    let prompts = readPrompts(args.prompts).map((p) => p.prompt);
    if (limit > 0) prompts = prompts.slice(0, limit);
    const { loadModelFolder, disposeTextToImageModel } = await import("../../models/pipeline.js");
    const { PreferenceStore } = await import("../../data/store.js");
    const { generatePairs } = await import("../../feedback/pairs.js");
    // a model folder, or a training run: its tuned weights on the base it was trained from
    let model: TextToImageModel;
    let release: () => void;
    if (existsSync(join(args.model, "model_index.json"))) {
      model = loadModelFolder(args.model, { onWarning: (m) => process.stderr.write(`warning: ${m}\n`) });
      release = () => disposeTextToImageModel(model);
    } else {
      const { loadModelPair, runBaseModel } = await import("../../eval/models.js");
      const base = args.base ?? runBaseModel(args.model);
      if (base === null) throw new UsageError(`--model ${args.model}: neither a model folder (model_index.json) nor a training run with a config naming its base; pass --base FOLDER`);
      let pair;
      try {
        pair = loadModelPair(base, args.model);
      } catch (e) {
        throw new UsageError(`--model ${args.model}: ${(e as Error).message}`);
      }
      model = pair.use("tuned", (m) => m); // LoRA: the adapters stay on after use("tuned")
      release = () => pair.dispose();
    }
    const store = new PreferenceStore(args.db);
    const bar = new ProgressBar("pairs");
    try {
      const summary = await generatePairs({
        model, modelName: resolve(args.model), prompts, store, k, seed, steps, guidance, sampler: args.sampler,
        pairing: args.pairing, batchSize,
        onEvent: (e) => {
          if (e.type === "plan") process.stderr.write(`pairs: ${e.prompts} prompts, ${e.promptsDone} already done, ${e.imagesToGenerate} images to sample\n`);
          else if (e.type === "images") bar.update(e.generated, e.total, "images");
        },
      });
      if (summary.imagesGenerated > 0) bar.done();
      const out = { db: args.db, ...summary };
      if (args.json) process.stdout.write(`${JSON.stringify(out)}\n`);
      else process.stdout.write(`${args.db}: ${summary.imagesGenerated} images sampled, ${summary.pairsAdded} pairs added (${summary.pairs} pairs over ${summary.prompts} prompts; ${summary.promptsSkipped} prompts were done already)\n`);
    } finally {
      store.close();
      release();
    }
  },
});
