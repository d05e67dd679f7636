// `diffusion-dpo cache`: encode a preference data set once with a model's frozen VAE and text
// encoder(s) (src/train/cache.ts). `train --data CACHE_DIR --model SAME_MODEL` then trains on the
// cached latents and prompt encodings without running them (SDXL: both CLIP encoders and the VAE
// encoder stay idle). The augmentation is fixed when the cache is written: center crop, no flip
// by default.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";
import { ProgressBar } from "../progress.js";

function positiveInt(raw: string, flag: string): number {
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer, got "${raw}"`);
  return n;
}

export default defineCommand({
  meta: {
    name: "cache",
    description: "Encode preference pairs once (VAE latents, prompt encodings) into a cache folder that `train --data` reads instead of images",
  },
  args: {
    model: { type: "string", description: "Model folder whose VAE and text encoder(s) encode the data (train the same model)", required: true },
    data: { type: "string", description: "Preference pairs: Pick-a-Pic parquet, a w/ + l/ folder, a .jsonl file or a SQLite store", required: true },
    out: { type: "string", description: "New (or empty) cache folder", required: true },
    format: { type: "string", description: "Force the data format: pickapic | folder | jsonl | sqlite (default: detected)" },
    resolution: { type: "string", description: "Image size in pixels (default: the model's)" },
    crop: { type: "string", description: "center | random (a random crop is drawn once, when the cache is written)", default: "center" },
    flip: { type: "boolean", description: "Random horizontal flip, drawn once (default: false)", default: false },
    batch: { type: "string", description: "Pairs encoded per forward pass", default: "8" },
    seed: { type: "string", description: "Seed of the (one-time) augmentation", default: "0" },
    skipBad: { type: "boolean", description: "Count and skip unreadable rows and images instead of stopping", default: false },
    device: { type: "string", description: "cpu | cuda | cuda:N", default: "cpu" },
    json: { type: "boolean", description: "Print one JSON object (the manifest and timing) on stdout", default: false },
  },
  async run({ args }) {
    if (!existsSync(join(args.model, "model_index.json"))) throw new UsageError(`--model ${args.model}: not a diffusers model folder (no model_index.json)`);
    if (existsSync(args.out) && (!statSync(args.out).isDirectory() || readdirSync(args.out).length > 0)) {
      throw new UsageError(`--out ${args.out}: exists and is not an empty folder; choose a new one`);
    }
    if (args.crop !== "center" && args.crop !== "random") throw new UsageError(`--crop must be center or random, got "${args.crop}"`);
    const batchSize = positiveInt(args.batch, "--batch");
    const seed = Number(args.seed);
    if (!Number.isInteger(seed)) throw new UsageError(`--seed must be an integer, got "${args.seed}"`);

    const { openPreferenceData } = await import("../../data/open.js");
    type Format = NonNullable<Parameters<typeof openPreferenceData>[1]>["format"];
    let data;
    try {
      data = openPreferenceData(args.data, { format: args.format as Format, skipBad: args.skipBad });
    } catch (err) {
      throw new UsageError(`--data ${args.data}: ${(err as Error).message}`);
    }
    const { loadModelFolder, disposeTextToImageModel } = await import("../../models/pipeline.js");
    const { defaultImageSize } = await import("../../sample/generate.js");
    const { writeTrainingCache } = await import("../../train/cache.js");
    let model;
    try {
      model = loadModelFolder(args.model, { device: args.device, onWarning: (m) => process.stderr.write(`warning: ${m}\n`) });
    } catch (err) {
      await data.close();
      throw new UsageError(`--model ${args.model}: ${(err as Error).message}`);
    }
    try {
      const resolution = args.resolution === undefined ? defaultImageSize(model) : positiveInt(args.resolution, "--resolution");
      const loader = data.loader({
        batchSize, augment: { resolution, crop: args.crop, flip: args.flip }, seed, shuffle: false, dropLast: false, workers: 1,
      });
      const bar = new ProgressBar("cache");
      const started = performance.now();
      let manifest;
      try {
        manifest = await writeTrainingCache({
          model, modelPath: resolve(args.model), batches: loader.batches(1), dir: args.out, resolution, device: args.device,
          onEvent: (e) => bar.update(e.pairs, Math.max(e.pairs, 1), `${e.pairs} pairs, ${e.prompts} prompts`),
        });
      } catch (err) {
        throw new UsageError(`cache: ${(err as Error).message}`);
      }
      bar.done();
      const seconds = Math.round((performance.now() - started) / 10) / 100;
      if (args.json) process.stdout.write(`${JSON.stringify({ out: resolve(args.out), seconds, ...manifest })}\n`);
      else process.stdout.write(`cached ${manifest.pairs} pairs and ${manifest.prompts} prompts in ${resolve(args.out)} (${seconds} s); train with --data ${args.out}\n`);
    } finally {
      disposeTextToImageModel(model);
      await data.close();
    }
  },
});
