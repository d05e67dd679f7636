// `diffusion-dpo pretrain`: trains a pixel-space text-to-image model on (image, caption) data with
// the denoising loss (src/train/pretrain.ts): prompt dropout, EMA, checkpoints, resume.
//
//   diffusion-dpo pretrain                                  the built-in emoji set → runs/pretrain
//   diffusion-dpo pretrain --data my-images/ --size 32      a folder of images + same-name .txt captions
//
// Output: <out>/checkpoints/step-NNNNNN (weights, EMA, optimizer; --resume continues from the
// newest) and <out>/model, a diffusers folder with the EMA weights that `sample`, `pairs` and
// `train` load. A fresh model follows the emoji recipe (src/datasets/emojiModel.ts); --model
// starts from an existing pixel-space model folder instead.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, extname, join } from "node:path";
import { defineCommand } from "citty";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { UsageError } from "../errors.js";
import { ProgressBar } from "../progress.js";

const IMAGE_EXTENSIONS = new Set([".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".avif"]);

/** The keys a --config file may set (flags win over it). */
const PretrainConfigSchema = z.strictObject({
  data: z.string().optional(),
  model: z.string().optional(),
  size: z.number().int().positive().optional(),
  steps: z.number().int().nonnegative().optional(),
  batch: z.number().int().positive().optional(),
  lr: z.number().positive().optional(),
  warmup: z.number().int().nonnegative().optional(),
  ema: z.number().min(0).lt(1).optional(),
  promptDropout: z.number().min(0).max(1).optional(),
  seed: z.number().int().optional(),
  checkpointEvery: z.number().int().nonnegative().optional(),
  trainTextEncoder: z.boolean().optional(),
});
type PretrainConfig = z.infer<typeof PretrainConfigSchema>;

const DEFAULTS: Required<Omit<PretrainConfig, "model">> = {
  data: "emoji", size: 32, steps: 1000, batch: 32, lr: 1e-3, warmup: 50, ema: 0.995, promptDropout: 0.1, seed: 0,
  checkpointEvery: 100, trainTextEncoder: true,
};

function readConfig(path: string): PretrainConfig {
  if (!existsSync(path)) throw new UsageError(`--config ${path}: no such file`);
  let raw: unknown;
  try {
    raw = /\.ya?ml$/i.test(path) ? parseYaml(readFileSync(path, "utf8")) : JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UsageError(`--config ${path}: cannot parse it (${(e as Error).message})`);
  }
  const r = PretrainConfigSchema.safeParse(raw ?? {});
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new UsageError(`--config ${path}: ${issues}. Allowed keys: ${Object.keys(PretrainConfigSchema.shape).join(", ")}`);
  }
  return r.data;
}

function num(v: string | undefined, flag: string, check: (n: number) => boolean, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || !check(n)) throw new UsageError(`${flag} must be ${what}, got "${v}"`);
  return n;
}

/** A folder of images with same-name .txt captions → Uint8 RGB pixels at size×size. */
export async function loadCaptionedFolder(dir: string, size: number): Promise<{ pixels: Uint8Array; captions: string[]; files: string[] }> {
  if (!existsSync(dir)) throw new UsageError(`--data ${dir}: no such folder (give "emoji" or a folder of images with .txt captions)`);
  const files = readdirSync(dir).filter((f) => IMAGE_EXTENSIONS.has(extname(f).toLowerCase())).sort();
  if (files.length === 0) throw new UsageError(`--data ${dir}: no images (${[...IMAGE_EXTENSIONS].join(", ")}) in it`);
  const { readImage } = await import("../../sample/png.js");
  const per = size * size * 3;
  const pixels = new Uint8Array(files.length * per);
  const captions: string[] = [];
  for (let i = 0; i < files.length; i++) {
    const f = files[i]!;
    const txt = join(dir, `${basename(f, extname(f))}.txt`);
    if (!existsSync(txt)) throw new UsageError(`--data ${dir}: ${f} has no caption file ${basename(txt)} beside it`);
    captions.push(readFileSync(txt, "utf8").trim().replace(/\s+/g, " "));
    const img = await readImage(join(dir, f), size);
    pixels.set(img.data, i * per);
  }
  return { pixels, captions, files };
}

export default defineCommand({
  meta: { name: "pretrain", description: "Train a pixel-space text-to-image base model on (image, caption) data (denoising loss, EMA, checkpoints)." },
  args: {
    data: { type: "string", description: "Training data: \"emoji\" (the built-in emoji set, train split) or a folder of images with same-name .txt captions", default: DEFAULTS.data },
    out: { type: "string", description: "Run folder: checkpoints/ and the final model/ (EMA weights, diffusers layout)", default: "runs/pretrain" },
    config: { type: "string", description: "JSON or YAML file with defaults for the options below (camelCase keys; flags win)" },
    model: { type: "string", description: "Start from this pixel-space model folder instead of a fresh emoji-recipe model" },
    size: { type: "string", description: "Image side length in pixels (a multiple of 4; the emoji set allows 8, 16, 32, 64)", default: String(DEFAULTS.size) },
    steps: { type: "string", description: "Total optimizer steps (a resumed run continues up to this)", default: String(DEFAULTS.steps) },
    batch: { type: "string", description: "Images per step", default: String(DEFAULTS.batch) },
    lr: { type: "string", description: "Peak learning rate (AdamW, linear warm-up, cosine decay)", default: String(DEFAULTS.lr) },
    warmup: { type: "string", description: "Warm-up steps", default: String(DEFAULTS.warmup) },
    ema: { type: "string", description: "EMA decay of the weights (0 = off; the saved model takes the EMA weights)", default: String(DEFAULTS.ema) },
    promptDropout: { type: "string", description: "Probability of training on the empty caption (keeps classifier-free guidance working)", default: String(DEFAULTS.promptDropout) },
    seed: { type: "string", description: "Seed of initialisation, batches, timesteps and noise", default: String(DEFAULTS.seed) },
    checkpointEvery: { type: "string", description: "Checkpoint every N steps (and always at the end); 0 = only at the end", default: String(DEFAULTS.checkpointEvery) },
    resume: { type: "boolean", description: "Continue from the newest checkpoint under --out", default: false },
    json: { type: "boolean", description: "Print one JSON object with the result on stdout", default: false },
  },
  async run({ args, rawArgs }) {
    const given = (flag: string) => {
      const camel = flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
      return rawArgs.some((a) => [flag, camel].some((f) => a === `--${f}` || a.startsWith(`--${f}=`)));
    };
    const cfg: PretrainConfig = args.config ? readConfig(args.config) : {};
    // a flag given on the command line wins; else the config file; else the default
    const pick = <K extends keyof typeof DEFAULTS>(key: K, flag: string, parsed: (typeof DEFAULTS)[K] | undefined): (typeof DEFAULTS)[K] =>
      given(flag) && parsed !== undefined ? parsed : ((cfg[key] as (typeof DEFAULTS)[K] | undefined) ?? parsed ?? DEFAULTS[key]);
    const isInt = (n: number) => Number.isInteger(n);
    const data = pick("data", "data", args.data);
    const size = pick("size", "size", num(args.size, "--size", (n) => isInt(n) && n >= 4 && n % 4 === 0, "a multiple of 4"));
    const steps = pick("steps", "steps", num(args.steps, "--steps", (n) => isInt(n) && n >= 0, "a non-negative integer"));
    const batch = pick("batch", "batch", num(args.batch, "--batch", (n) => isInt(n) && n >= 1, "a positive integer"));
    const lr = pick("lr", "lr", num(args.lr, "--lr", (n) => n > 0, "a positive number"));
    const warmup = pick("warmup", "warmup", num(args.warmup, "--warmup", (n) => isInt(n) && n >= 0, "a non-negative integer"));
    const ema = pick("ema", "ema", num(args.ema, "--ema", (n) => n >= 0 && n < 1, "in [0, 1)"));
    const promptDropout = pick("promptDropout", "prompt-dropout", num(args.promptDropout, "--prompt-dropout", (n) => n >= 0 && n <= 1, "in [0, 1]"));
    const seed = pick("seed", "seed", num(args.seed, "--seed", isInt, "an integer"));
    const checkpointEvery = pick("checkpointEvery", "checkpoint-every", num(args.checkpointEvery, "--checkpoint-every", (n) => isInt(n) && n >= 0, "a non-negative integer"));
    const modelDir = given("model") ? args.model : (cfg.model ?? args.model);
    const trainTextEncoder = cfg.trainTextEncoder ?? DEFAULTS.trainTextEncoder;

    const { createRecipeModel, baseEmojiWeights } = await import("../../datasets/emojiModel.js");
    const { loadModelFolder, saveModelFolder, disposeTextToImageModel } = await import("../../models/pipeline.js");
    const { applyEma, pretrain, pretrainModelFrom } = await import("../../train/pretrain.js");

    let pixels: Uint8Array;
    let captions: string[];
    let weights: number[] | undefined;
    if (data === "emoji") {
      if (64 % size !== 0) throw new UsageError(`--size ${size}: the emoji set comes at sizes dividing 64 (8, 16, 32, 64)`);
      const { loadEmojiDataset } = await import("../../datasets/emoji.js");
      const train = await loadEmojiDataset({ split: "train", size });
      pixels = train.pixels;
      captions = train.items.map((i) => i.caption);
      weights = baseEmojiWeights(train);
    } else {
      ({ pixels, captions } = await loadCaptionedFolder(data, size));
    }

    let t2i;
    if (modelDir) {
      try {
        t2i = loadModelFolder(modelDir);
      } catch (e) {
        throw new UsageError(`--model ${modelDir}: ${(e as Error).message}`);
      }
      if (t2i.vae) throw new UsageError(`--model ${modelDir} is a latent model (it has a VAE); pretrain trains pixel-space models only`);
    } else {
      t2i = createRecipeModel(captions, { seed, size });
    }
    const bar = new ProgressBar("pretrain");
    let lastLoss = NaN;
    try {
      const model = pretrainModelFrom(t2i, { trainTextEncoder });
      const result = pretrain({
        model, data: { pixels, captions, size, weights }, steps, batchSize: batch, lr, warmupSteps: warmup, lrSchedule: "cosine",
        emaDecay: ema, promptDropout, seed, out: args.out, checkpointEvery, resume: args.resume, logEvery: 1,
        onEvent: (e) => {
          if (e.type === "step") {
            lastLoss = e.loss;
            bar.update(e.step, e.totalSteps, `loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ${e.imagesPerSecond.toFixed(1)} img/s`);
          } else if (e.type === "start" && e.resumedFrom) {
            process.stderr.write(`resuming from ${e.resumedFrom} (step ${e.step})\n`);
          }
        },
      });
      bar.done();
      applyEma(model, result.ema);
      for (const t of result.ema.values()) t.dispose();
      const modelOut = join(args.out, "model");
      saveModelFolder(modelOut, t2i);
      const summary = {
        out: args.out, model: modelOut, data, images: captions.length, size, steps: result.step, batch, lr, warmup, ema, promptDropout, seed,
        seconds: Math.round(result.seconds * 10) / 10, loss: result.losses[result.losses.length - 1]?.[1] ?? lastLoss,
        parameters: { unet: t2i.unet.numParameters(), textEncoder: t2i.textEncoder.numParameters() },
      };
      writeFileSync(join(modelOut, "training.json"), JSON.stringify({ ...summary, losses: result.losses }, null, 1) + "\n");
      if (args.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else process.stdout.write(`wrote ${modelOut} after ${summary.steps} steps (${summary.seconds} s, loss ${Number(summary.loss).toFixed(4)})\n`);
    } finally {
      disposeTextToImageModel(t2i);
    }
  },
});
