// `diffusion-dpo sample`: prompts → PNG files, a labelled grid and samples.json (src/sample).
//
//   diffusion-dpo sample --prompt "grinning face, face smiling, smileys & emotion" --prompt "red apple"
//   diffusion-dpo sample --prompts prompts.txt --num 4 --guidance 5 --out samples/
//   diffusion-dpo sample --prompt "cat face" --init-image photo.png --strength 0.6
//
// Works for the shipped pixel-space model (models/emoji-base) and diffusers Stable Diffusion
// folders (with a VAE). Image i of prompt p gets seed `--seed + p·num + i`, and a sample depends
// on its own seed only, so the same seed gives the same image whatever else is in the batch.
import { existsSync, readFileSync } from "node:fs";
import { defineCommand } from "citty";
import { UsageError } from "../errors.js";
import { ProgressBar } from "../progress.js";

/** Prompts from a text file: one per line; blank lines and lines starting with # are skipped. */
export function readPromptFile(path: string): string[] {
  if (!existsSync(path)) throw new UsageError(`--prompts ${path}: no such file`);
  const prompts = readFileSync(path, "utf8").split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
  if (prompts.length === 0) throw new UsageError(`--prompts ${path}: no prompts in it (one per line; # starts a comment)`);
  return prompts;
}

/** Every value of a repeatable string flag (citty keeps only the last): `--name V` and `--name=V`. */
export function repeated(rawArgs: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--") break;
    if (a === `--${name}`) {
      const v = rawArgs[i + 1];
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      out.push(v);
      i++;
    } else if (a.startsWith(`--${name}=`)) out.push(a.slice(name.length + 3));
  }
  return out;
}

function int(v: string, flag: string, min: number): number {
  const n = Number(v);
  if (v.trim() === "" || !Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be an integer ≥ ${min}, got "${v}"`);
  return n;
}

/** "A,B" (or "AxB") → two integers ≥ min. */
function intPair(v: string, flag: string, min = 1): [number, number] {
  const parts = v.split(/[,x×]/).map((p) => p.trim());
  const n = parts.map(Number);
  if (parts.length !== 2 || n.some((x, i) => parts[i] === "" || !Number.isInteger(x) || x < min)) {
    throw new UsageError(`${flag} must be two integers ≥ ${min} as A,B (e.g. 1024,1024), got "${v}"`);
  }
  return [n[0]!, n[1]!];
}

export default defineCommand({
  meta: { name: "sample", description: "Generate images from prompts: PNG files, a labelled grid and samples.json." },
  args: {
    model: { type: "string", description: "Model folder (diffusers layout: the shipped emoji model, a Stable Diffusion, SD3 or Flux folder)", default: "models/emoji-base" },
    prompt: { type: "string", description: "A prompt (repeat the flag for several)" },
    prompts: { type: "string", description: "Text file with one prompt per line (# comments)" },
    num: { type: "string", description: "Images per prompt", default: "1" },
    seed: { type: "string", description: "Seed of the first image; the others count up from it", default: "0" },
    sampler: { type: "string", description: "Sampler: ddim, ddpm, euler, euler_ancestral, dpmpp_2m (default: the one the model folder's scheduler class names, e.g. EulerDiscreteScheduler → euler; DDIM for classes without one)" },
    steps: { type: "string", description: "Sampling steps", default: "50" },
    guidance: { type: "string", description: "Classifier-free guidance scale (≤ 1 turns it off)", default: "3" },
    negativePrompt: { type: "string", description: "The unconditional branch's prompt (default: none — the empty prompt; SDXL folders with force_zeros_for_empty_prompt use zero embeddings, as diffusers)" },
    originalSize: { type: "string", description: "SDXL micro-conditioning original_size as HEIGHT,WIDTH (default: the output size)" },
    cropTopLeft: { type: "string", description: "SDXL micro-conditioning crops_coords_top_left as TOP,LEFT (default: 0,0)" },
    targetSize: { type: "string", description: "SDXL micro-conditioning target_size as HEIGHT,WIDTH (default: the output size)" },
    eta: { type: "string", description: "DDIM η (0 = deterministic)", default: "0" },
    initImage: { type: "string", description: "Image-to-image: start from this image (resized to the model's size)" },
    strength: { type: "string", description: "Image-to-image: fraction of the chain to run from the noised input (0 keeps it, 1 ignores it)", default: "0.6" },
    size: { type: "string", description: "Output side length in pixels (default: the model's)" },
    maxSequenceLength: { type: "string", description: "SD3 / Flux: T5 tokens per prompt (default: diffusers' 256 for SD3, 512 for Flux)" },
    batch: { type: "string", description: "Images per forward pass", default: "16" },
    out: { type: "string", description: "Output folder for the PNGs, grid.png and samples.json", default: "samples" },
    json: { type: "boolean", description: "Print one JSON object (files, grid, prompts, seeds) on stdout", default: false },
  },
  async run({ args, rawArgs }) {
    const { SAMPLER_NAMES, isSamplerName } = await import("../../diffusion/index.js");
    const flagPrompts = repeated(rawArgs, "prompt");
    const prompts = [...flagPrompts, ...(args.prompts ? readPromptFile(args.prompts) : [])];
    if (prompts.length === 0) throw new UsageError("give at least one prompt: --prompt TEXT (repeatable) or --prompts FILE");
    const num = int(args.num, "--num", 1);
    const seed = int(args.seed, "--seed", 0);
    const steps = int(args.steps, "--steps", 1);
    const batchSize = int(args.batch, "--batch", 1);
    const requested = args.sampler?.replace(/-/g, "_");
    if (requested !== undefined && !isSamplerName(requested)) throw new UsageError(`--sampler ${args.sampler}: choose one of ${SAMPLER_NAMES.join(", ")}`);
    const sampler = requested !== undefined && isSamplerName(requested) ? requested : undefined;
    const guidance = Number(args.guidance);
    if (!(Number.isFinite(guidance) && guidance >= 0)) throw new UsageError(`--guidance must be a number ≥ 0, got "${args.guidance}"`);
    const eta = Number(args.eta);
    if (!(eta >= 0 && eta <= 1)) throw new UsageError(`--eta must be in [0, 1], got "${args.eta}"`);
    const strength = Number(args.strength);
    if (!(strength >= 0 && strength <= 1)) throw new UsageError(`--strength must be in [0, 1], got "${args.strength}"`);
    if (!existsSync(args.model)) throw new UsageError(`--model ${args.model}: no such folder`);
    if (args.initImage !== undefined && !existsSync(args.initImage)) throw new UsageError(`--init-image ${args.initImage}: no such file`);

    // SD3 / Flux folders run the flow-matching pipelines (src/models/flow-generate.ts)
    const { flowFamilyOf } = await import("../../models/flow-generate.js");
    if (flowFamilyOf(args.model) !== null) {
      if (args.initImage !== undefined || requested !== undefined) throw new UsageError("--init-image and --sampler are not supported for SD3 / Flux folders (they sample with FlowMatch Euler)");
      const all = prompts.flatMap((p) => Array.from({ length: num }, () => p));
      const { runFlowSample } = await import("../flow-sample.js");
      const result = await runFlowSample({
        model: args.model, prompts: all, seeds: all.map((_, i) => seed + i), steps, guidance, negativePrompt: args.negativePrompt ?? "",
        size: args.size === undefined ? undefined : int(args.size, "--size", 1), out: args.out,
        maxSequenceLength: args.maxSequenceLength === undefined ? undefined : int(args.maxSequenceLength, "--max-sequence-length", 1),
      });
      if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else process.stdout.write(`wrote ${all.length} image${all.length === 1 ? "" : "s"} and ${String(result.grid)} (${String(result.seconds)} s)\n`);
      return;
    }

    const { loadModelFolder, disposeTextToImageModel } = await import("../../models/pipeline.js");
    const { defaultImageSize, generate } = await import("../../sample/generate.js");
    const { readImage, writeSamples } = await import("../../sample/png.js");
    let model;
    try {
      model = loadModelFolder(args.model, { onWarning: (m) => process.stderr.write(`warning: ${m}\n`) });
    } catch (e) {
      throw new UsageError(`--model ${args.model}: ${(e as Error).message}`);
    }
    try {
      const size = args.size === undefined ? defaultImageSize(model) : int(args.size, "--size", 1);
      const all = prompts.flatMap((p) => Array.from({ length: num }, () => p));
      const seeds = all.map((_, i) => seed + i);
      const initImages = args.initImage !== undefined ? [await readImage(args.initImage, size)] : undefined;
      const bar = new ProgressBar("sample");
      const total = Math.ceil(all.length / batchSize);
      const started = performance.now();
      const micro = {
        ...(args.originalSize !== undefined ? { originalSize: intPair(args.originalSize, "--original-size") } : {}),
        ...(args.cropTopLeft !== undefined ? { cropTopLeft: intPair(args.cropTopLeft, "--crop-top-left", 0) } : {}),
        ...(args.targetSize !== undefined ? { targetSize: intPair(args.targetSize, "--target-size") } : {}),
      };
      const images = generate({
        model, prompts: all, seeds, sampler, steps, guidance, eta, negativePrompt: args.negativePrompt, size, batchSize, micro,
        initImages, strength: initImages ? strength : undefined,
        onEvent: (e) => { if (e.type === "step") bar.update(e.batch * e.total + e.done, total * e.total, `batch ${e.batch + 1}/${e.batches}`); },
      });
      bar.done();
      const seconds = (performance.now() - started) / 1000;
      const written = await writeSamples(args.out, images, all, seeds);
      const result = {
        model: args.model, out: args.out, grid: written.grid, files: written.files, prompts: all, seeds,
        sampler: sampler ?? (await import("../../diffusion/index.js")).samplerForScheduler(model.schedulerClass), steps, guidance,
        size, initImage: args.initImage ?? null, strength: initImages ? strength : null, seconds: Math.round(seconds * 100) / 100,
      };
      if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else process.stdout.write(`wrote ${images.length} image${images.length === 1 ? "" : "s"} and ${written.grid} (${result.seconds} s)\n`);
    } finally {
      disposeTextToImageModel(model);
    }
  },
});
