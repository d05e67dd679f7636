// Diffusion-DPO training pairs/s on the tiny SD1.5 pipeline saved by real diffusers
// (../shared/data/reference-models/sd15-pipeline/pipeline: UNet on 4-channel 16×16 latents, CLIP
// text encoder width 24 / 77 positions, AutoencoderKL with scaling 0.18215 on 128×128 images,
// scaled_linear schedule, epsilon prediction), beside PyTorch doing the same step on the same
// architecture with the same weights (bench/torch/dpo_sd15.py), the two sides alternating step by
// step as in bench/cases/dpo.ts.
//
// Ours is the real trainer (DpoTrainer) set up as src/train/run.ts sets up an SD1.x run; rows:
//   latents, full / LoRA r8: pairs of VAE latents encoded once before the loop (ours with our VAE,
//     the twin with its own; both the posterior mean of random pixels), prompts through the text
//     encoder every step on both sides;
//   cached vs official per-step work, full / LoRA r8: ours trains from a training cache written by
//     writeTrainingCache (latents and prompt encodings read from its safetensors; no VAE or text
//     encoder runs in the step), as `diffusion-dpo train --data CACHE`; the twin does the official
//     train.py's per-step work: vae.encode(pixels).latent_dist.sample() × scaling factor and the
//     text encoder every step, then the same DPO step;
//   official per-step work on both sides, full: ours from pixels with the VAE posterior sampled and
//     the prompts encoded in every step (the uncached run), the twin as in the row above: what the
//     cache itself saves, beside the row above.
// The twin loads the folder's safetensors strictly into its transcriptions (every name and shape
// must match) and the parameter counts (UNet, text encoder, VAE, trainable) are checked equal.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchCase, BenchResult } from "../types.js";
import { Generator, noGrad, rand, setNumThreads, tidy, type Tensor } from "../../src/tensor/index.js";
import { disposeTextToImageModel, encodePrompts, loadModelFolder, type TextToImageModel } from "../../src/models/pipeline.js";
import { ClipTokenizer } from "../../src/models/clip/tokenizer.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { injectLora } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer, loraAdapters } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import { CachedPairSource, TrainingCache, writeTrainingCache } from "../../src/train/cache.js";
import { median } from "./engine.js";
import { AlternatingSource, TorchTwin, pairedRatioSpread } from "../alternating.js";

/** The pipeline folder as real diffusers saved it (its tokenizer folder lacks vocab.json / merges.txt). */
export const SD15_PIPELINE = fileURLToPath(new URL("../../../shared/data/reference-models/sd15-pipeline/pipeline", import.meta.url));
const PAIRS = 4;
const RANK = 8;
const BETA = 5000;
const PROMPTS = ["a red apple on a table", "a cat wearing a hat", "a lighthouse at dusk", "two dogs on a beach"];
const MiB = 2 ** 20;

/**
 * A loadable copy of the pipeline: the components linked from the read-only folder, the tokenizer
 * folder written from CLIP's merges (assets/tokenizer, the file the reference's README derives the
 * removed vocab.json and merges.txt from).
 */
function loadableFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), "bench-sd15-model-"));
  for (const name of ["model_index.json", "unet", "text_encoder", "vae", "scheduler"]) symlinkSync(join(SD15_PIPELINE, name), join(dir, name));
  mkdirSync(join(dir, "tokenizer"));
  ClipTokenizer.fromFile().saveFolder(join(dir, "tokenizer"));
  return dir;
}

type Work = "latents" | "cached" | "official";
interface Mode { work: Work; finetune: "full" | "lora" }
interface ModeResult { ours: number[]; theirs: number[]; liveBytes: number; trainable: number; ref: Record<string, number> | null; error?: string }

async function runMode(folder: string, mode: Mode, threads: number, steps: number, warmup: number): Promise<ModeResult> {
  const model: TextToImageModel = loadModelFolder(folder);
  const vae = model.vae!;
  const unet = model.unet;
  const { work, finetune } = mode;
  const worker = new TorchTwin("dpo_sd15.py", threads, {
    folder: SD15_PIPELINE, mode: finetune, work: work === "latents" ? "latents" : "official", pairs: PAIRS, beta: BETA, rank: RANK, alpha: RANK,
  }, 600_000);
  const out = mkdtempSync(join(tmpdir(), `bench-dpo-sd15-${work}-${finetune}-`));
  const disposers: (() => void)[] = [];
  let error: string | undefined;
  try {
    // 4 batches of pairs: random pixels in [−1, 1] at the VAE's resolution (128 here)
    const g = new Generator(0);
    const n = 4 * PAIRS;
    const sample = unet.config.sampleSize;
    const latentSide = Array.isArray(sample) ? sample[0] : sample;
    if (latentSide === null) throw new Error(`dpo-sd15: ${folder}'s UNet config has no sample_size`);
    const side = latentSide * 2 ** (vae.config.blockOutChannels.length - 1);
    const prompts = Array.from({ length: n }, (_, i) => PROMPTS[i % PROMPTS.length]!);
    // made in a tidy scope: an intermediate left outside one lives until V8 collects it, counted in liveBytes meanwhile
    const [chosenPx, rejectedPx] = tidy(() => [rand([n, 3, side, side], g).mul(2).sub(1), rand([n, 3, side, side], g).mul(2).sub(1)]);
    model.textEncoder.requiresGrad(false).eval();
    vae.requiresGrad(false).eval();
    unet.train();

    let inner: TensorPairSource | CachedPairSource;
    let encode: (p: string[]) => Tensor = (p) => encodePrompts(model, p);
    if (work === "cached") {
      // the cache as `diffusion-dpo cache` writes it: latents (posterior mean) and prompt encodings
      const dir = join(out, "cache");
      const pixels = (k: number) => tidy(() => {
        const [c, r] = [chosenPx, rejectedPx].map((t) => t.slice(0, k * PAIRS, (k + 1) * PAIRS).toFloat32Array());
        const px = new Float32Array(c!.length + r!.length);
        px.set(c!);
        px.set(r!, c!.length);
        return px;
      });
      await writeTrainingCache({
        model, modelPath: folder, dir, resolution: side,
        batches: (async function* () {
          for (let k = 0; k < 4; k++) yield { prompts: prompts.slice(k * PAIRS, (k + 1) * PAIRS), pixels: pixels(k), shape: [2 * PAIRS, 3, side, side] as [number, number, number, number] };
        })(),
      });
      const cache = new TrainingCache(dir);
      disposers.push(() => cache.close());
      inner = new CachedPairSource(cache, PAIRS, 0);
      encode = (p) => cache.encodePrompts(p);
    } else if (work === "latents") {
      // encoded once with our VAE, before the loop: the posterior mean × scaling factor
      const [chosen, rejected] = tidy(() => noGrad(() => [vae.encodeLatents(chosenPx), vae.encodeLatents(rejectedPx)]));
      const src = new TensorPairSource({ prompts, chosen: chosen!, rejected: rejected! }, PAIRS, 0);
      chosen!.dispose();
      rejected!.dispose();
      disposers.push(() => src.dispose());
      inner = src;
    } else {
      const src = new TensorPairSource({ prompts, chosen: chosenPx, rejected: rejectedPx }, PAIRS, 0);
      disposers.push(() => src.dispose());
      inner = src;
    }
    chosenPx.dispose();
    rejectedPx.dispose();

    try {
      const theirs = (await worker.call("params")).value as Record<string, number>;
      const ours = { unet: unet.numParameters(), text: model.textEncoder.numParameters(), vae: vae.numParameters() };
      for (const k of ["unet", "text", "vae"] as const) {
        if (theirs[k] !== ours[k]) throw new Error(`dpo-sd15: our ${k} has ${ours[k]} parameters, bench/torch/dpo_sd15.py's ${theirs[k]}; keep the architectures identical`);
      }
    } catch (e) {
      error = (e as Error).message;
    }
    const source = new AlternatingSource(inner, error === undefined ? worker : null);
    if (finetune === "lora") {
      setInitSeed(0);
      injectLora(unet, { rank: RANK, alpha: RANK, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
    }
    const trainable = unet.trainableParameters().reduce((a, [, p]) => a + p.size, 0);
    const config = loadTrainConfig({
      flags: {
        seed: 0, method: "dpo", beta: BETA, finetune, "lora.rank": RANK, "lora.alpha": RANK, batchSize: PAIRS, maxSteps: steps,
        learningRate: 1e-5, scaleLr: false, warmupSteps: 0, lrSchedule: "constant", checkpointEvery: 0, keepCheckpoints: 1,
        predictionType: "epsilon", promptDropout: 0.2, latentSampling: "sample", outputDir: out,
      },
    });
    const trainer = new DpoTrainer({
      config, model: unet, adapters: finetune === "lora" ? loraAdapters(unet) : undefined,
      encodePrompts: encode,
      // only the uncached pixel run encodes images in the step (a posterior sample, as the official script)
      encodeImages: work === "official" ? (px, noise) => vae.encodeLatents(px, noise) : undefined,
      schedule: new NoiseSchedule(model.scheduler), data: source, saveFinal: () => {},
      // as in the dpo case: BENCH_NO_PIPELINE=1 measures the overlapped steps unpipelined
      pipelineSteps: process.env.BENCH_NO_PIPELINE === undefined ? undefined : false,
      onEvent: (e) => { if (e.type === "step") source.stepDone(); },
    });
    try {
      await trainer.run();
      const ok = error === undefined && source.error === undefined;
      const mem = ok ? ((await worker.call("memory")).value as Record<string, number>) : null;
      if (mem !== null && mem.trainable !== trainable) error = `dpo-sd15: ${trainable} trainable parameters here, ${mem.trainable} in PyTorch`;
      return { ours: source.ours.slice(warmup), theirs: source.theirs.slice(warmup), liveBytes: source.liveBytes, trainable, ref: mem, error: error ?? source.error };
    } finally {
      trainer.dispose();
    }
  } finally {
    worker.close();
    for (const d of disposers) d();
    disposeTextToImageModel(model);
    rmSync(out, { recursive: true, force: true });
  }
}

const LABELS: Record<Work, string> = {
  latents: `tiny SD1.5 arch, ${PAIRS} pairs of 16×16 latents encoded once, text encoded per step`,
  cached: `tiny SD1.5 arch, ${PAIRS} pairs: ours from a training cache vs PyTorch doing the official per-step work (VAE encode 128×128 + text encode)`,
  official: `tiny SD1.5 arch, ${PAIRS} pairs, official per-step work on both sides (VAE encode 128×128 sampled + text encode), ours uncached`,
};

export const dpoSd15Bench: BenchCase = {
  name: "dpo-sd15",
  async run({ quick, threads }) {
    setNumThreads(threads);
    const warmup = 1;
    const reps = quick ? 3 : 12;
    const folder = loadableFolder();
    const modes: Mode[] = [
      { work: "latents", finetune: "full" }, { work: "latents", finetune: "lora" },
      { work: "cached", finetune: "full" }, { work: "cached", finetune: "lora" },
      { work: "official", finetune: "full" },
    ];
    const results: BenchResult[] = [];
    try {
      for (const mode of modes) {
        process.stderr.write(`dpo-sd15: ${mode.work} ${mode.finetune} ...\n`);
        const m = await runMode(folder, mode, threads, warmup + reps, warmup);
        const ours = PAIRS / median(m.ours);
        const ref = m.theirs.length > 0 ? PAIRS / median(m.theirs) : undefined;
        const spread = pairedRatioSpread(m.ours, m.theirs);
        results.push({
          name: `DPO training, ${mode.finetune === "full" ? "full fine-tuning" : `LoRA r${RANK}`} (${LABELS[mode.work]})`,
          unit: "pairs/s", ours,
          ...(ref !== undefined ? { reference: ref, ratio: ours / ref, ratioSpread: spread } : {}),
          note: [
            `${(median(m.ours) * 1e3).toFixed(0)} ms per step here${ref !== undefined ? `, ${(median(m.theirs) * 1e3).toFixed(0)} ms in PyTorch` : ""}`,
            `${spread?.rounds ?? 0} alternating rounds (after ${warmup} warm-up)`,
            `${m.trainable.toLocaleString("en")} trainable parameters`,
            `weights+reference+optimizer state between steps: ours ${(m.liveBytes / MiB).toFixed(1)} MiB` +
              (m.ref ? `, PyTorch ${(m.ref.persistentBytes! / MiB).toFixed(1)} MiB` : "") +
              (mode.work === "official" ? ` (ours counts the pixel pair pool its data source holds, ${(2 * 4 * PAIRS * 3 * 128 * 128 * 4 / MiB).toFixed(1)} MiB; PyTorch's leaves its pool out)` : ""),
            ...(m.error ? [`PyTorch reference failed: ${m.error}`] : []),
          ].join("; "),
        });
      }
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
    return results;
  },
};
