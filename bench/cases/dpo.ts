// Diffusion-DPO training pairs/s on the default base model's architecture (models/emoji-base:
// the diffusers UNet2DConditionModel + 2-layer CLIP text encoder, 32×32 RGB pixel space, v
// prediction), full fine-tuning and LoRA (r 8 on to_q/to_k/to_v/to_out.0), beside PyTorch doing
// the same DPO step on the same architecture (bench/torch/dpo.py) in the same run.
//
// Ours is the real trainer (DpoTrainer: prompt encoding, shared t/ε per pair, policy forward +
// backward, reference forward without autograd, loss and metrics, clip 1.0, AdamW). The two sides
// alternate step by step: the data source hands the trainer its next batch only after PyTorch has
// run one step, and our step time is measured from the moment a batch is handed over to the
// moment the next one is asked for (the whole optimizer step, nothing of PyTorch's).
//
// Memory: what stays alive between steps (weights + reference + optimizer state: our live tensor
// bytes, PyTorch's parameters and state) for full vs LoRA; with LoRA the reference is the same
// network with adapters off, so it must not hold a second copy of the UNet. RSS high-water marks
// are reported too (each mode in its own process on both sides).
//
// Our step runs as `train` runs it by default: on CPU with ≥ 2 threads the first part of the pairs
// backpropagates on a second thread while the second part's forwards run (overlapBackward);
// BENCH_NO_OVERLAP=1 measures the one-pass step instead, to see what the overlap is worth. Each
// step also prepares the next one during its last backward (pipelineSteps); BENCH_NO_PIPELINE=1
// measures the overlapped steps without that.
//
// Each mode runs in a fresh child process (this file with --mode-child): run in one process, the
// second mode inherited a warm allocator and primitive caches while PyTorch's worker started cold,
// which flattered whichever mode ran second. The first `warmup` steps of each side are not timed.
import { mkdtempSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BenchCase, BenchResult } from "../types.js";
import { Generator, keep, rand, setNumThreads, tidy } from "../../src/tensor/index.js";
import { clipTextConfigToJson } from "../../src/models/clip/text-model.js";
import { toDiffusersConfig } from "../../src/models/unet/config.js";
import { disposeTextToImageModel, encodePrompts, loadModelFolder, type TextToImageModel } from "../../src/models/pipeline.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { injectLora } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer, loraAdapters } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import { median } from "./engine.js";
import { AlternatingSource, TorchTwin, pairedRatioSpread } from "../alternating.js";
import { runJsonChild } from "../child.js";

const MODEL = "models/emoji-base";
const PAIRS = 8;
const RANK = 8;
const BETA = 5000;
const MiB = 2 ** 20;


interface ModeResult { ours: number[]; theirs: number[]; liveBytes: number; rss: number; ref: Record<string, number> | null; error?: string; trainable: number }

async function runMode(model: TextToImageModel, mode: "full" | "lora", threads: number, steps: number, warmup: number): Promise<ModeResult> {
  const unet = model.unet;
  const cfgJson = {
    unet: toDiffusersConfig(unet.config), text: clipTextConfigToJson(model.textEncoder.config), mode, pairs: PAIRS,
    seq_len: model.textEncoder.config.maxPositionEmbeddings, beta: BETA, rank: RANK, alpha: RANK,
  };
  const worker = new TorchTwin("dpo.py", threads, cfgJson, 600_000);
  const out = mkdtempSync(join(tmpdir(), `bench-dpo-${mode}-`));
  const g = new Generator(0);
  const n = 4 * PAIRS;
  // tidy: the temporaries of rand·2−1 would otherwise stay alive until a GC and count as held memory
  const pairs = tidy(() => ({
    prompts: Array.from({ length: n }, (_, i) => ["grinning face", "red heart", "cat face with tears of joy", "rocket"][i % 4]!),
    chosen: keep(rand([n, 3, 32, 32], g).mul(2).sub(1)),
    rejected: keep(rand([n, 3, 32, 32], g).mul(2).sub(1)),
  }));
  const inner = new TensorPairSource(pairs, PAIRS, 0);
  pairs.chosen.dispose();
  pairs.rejected.dispose();
  let error: string | undefined;
  try {
    const ourParams = unet.numParameters() + model.textEncoder.numParameters();
    const refParams = (await worker.call("params")).value as number;
    if (refParams !== ourParams) throw new Error(`dpo: ours has ${ourParams} parameters, bench/torch/dpo.py ${refParams}; keep the architectures identical`);
  } catch (e) {
    error = (e as Error).message;
  }
  const source = new AlternatingSource(inner, error === undefined ? worker : null);
  if (mode === "lora") {
    setInitSeed(0);
    injectLora(unet, { rank: RANK, alpha: RANK, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
  }
  const config = loadTrainConfig({
    flags: {
      seed: 0, method: "dpo", beta: BETA, finetune: mode, "lora.rank": RANK, "lora.alpha": RANK, batchSize: PAIRS, maxSteps: steps,
      learningRate: 1e-5, scaleLr: false, warmupSteps: 0, lrSchedule: "constant", checkpointEvery: 0, keepCheckpoints: 1,
      predictionType: "v_prediction", promptDropout: 0.2, outputDir: out,
    },
  });
  model.textEncoder.requiresGrad(false).eval();
  const trainer = new DpoTrainer({
    config, model: unet, adapters: mode === "lora" ? loraAdapters(unet) : undefined,
    encodePrompts: (p) => encodePrompts(model, p), schedule: new NoiseSchedule(model.scheduler), data: source,
    overlapBackward: process.env.BENCH_NO_OVERLAP === undefined,
    pipelineSteps: process.env.BENCH_NO_PIPELINE === undefined ? undefined : false,
    saveFinal: () => {},
    onEvent: (e) => { if (e.type === "step") source.stepDone(); },
  });
  try {
    await trainer.run();
    const mem = error === undefined && source.error === undefined ? ((await worker.call("memory")).value as Record<string, number>) : null;
    return {
      ours: source.ours.slice(warmup), theirs: source.theirs.slice(warmup), liveBytes: source.liveBytes,
      rss: process.resourceUsage().maxRSS * 1024, ref: mem, error: error ?? source.error,
      trainable: unet.trainableParameters().reduce((a, [, p]) => a + p.size, 0),
    };
  } finally {
    trainer.dispose();
    worker.close();
    inner.dispose();
    rmSync(out, { recursive: true, force: true });
  }
}

/** One mode in this process: the model loaded fresh, `steps` alternating steps. */
async function runModeHere(mode: "full" | "lora", threads: number, steps: number, warmup: number): Promise<ModeResult & { weightBytes: number }> {
  setNumThreads(threads);
  const model = loadModelFolder(MODEL);
  try {
    return { ...(await runMode(model, mode, threads, steps, warmup)), weightBytes: model.unet.numParameters() * 4 };
  } finally {
    disposeTextToImageModel(model);
  }
}

/** One mode in a fresh process (see the file comment). */
function runModeInChild(mode: "full" | "lora", threads: number, steps: number, warmup: number): ModeResult & { weightBytes: number } {
  const args = ["--mode-child", mode, String(threads), String(steps), String(warmup)];
  return runJsonChild<ModeResult & { weightBytes: number }>(fileURLToPath(import.meta.url), args, `dpo bench, ${mode}: the child process`);
}

if (process.argv[2] === "--mode-child") {
  const [mode, threads, steps, warmup] = process.argv.slice(3);
  const result = await runModeHere(mode as "full" | "lora", Number(threads), Number(steps), Number(warmup));
  process.stdout.write(JSON.stringify(result));
}

export const dpoBench: BenchCase = {
  name: "dpo",
  async run({ quick, threads }) {
    const warmup = 3;
    const reps = quick ? 4 : 16;
    const results: BenchResult[] = [];
    const modes: Partial<Record<"full" | "lora", ModeResult>> = {};
    let weightBytes = 0;
    for (const mode of ["lora", "full"] as const) {
      const m = runModeInChild(mode, threads, warmup + reps, warmup);
      weightBytes = m.weightBytes;
      modes[mode] = m;
    }
    for (const mode of ["full", "lora"] as const) {
      const m = modes[mode]!;
      const ours = PAIRS / median(m.ours);
      const ref = m.theirs.length > 0 ? PAIRS / median(m.theirs) : undefined;
      const notes = [
        `${(median(m.ours) * 1e3).toFixed(0)} ms per step here${ref !== undefined ? `, ${(median(m.theirs) * 1e3).toFixed(0)} ms in PyTorch` : ""}`,
        `${m.trainable.toLocaleString("en")} trainable parameters`,
        `weights+reference+optimizer state+data pool between steps: ours ${(m.liveBytes / MiB).toFixed(1)} MiB` +
          (m.ref ? `, PyTorch ${(m.ref.persistentBytes! / MiB).toFixed(1)} MiB` : ""),
        `RSS high-water: ours ${(m.rss / MiB).toFixed(0)} MiB (its own process)` + (m.ref ? `, PyTorch ${(m.ref.maxRssBytes! / MiB).toFixed(0)} MiB` : ""),
        ...(m.error ? [`PyTorch reference failed: ${m.error}`] : []),
      ];
      results.push({
        name: `DPO training, ${mode === "full" ? "full fine-tuning" : `LoRA r${RANK}`} (emoji-base arch, ${PAIRS} pairs of 32×32)`,
        unit: "pairs/s", ours,
        ...(ref !== undefined ? { reference: ref, ratio: ours / ref, ratioSpread: pairedRatioSpread(m.ours, m.theirs) } : {}),
        note: notes.join("; "),
      });
    }
    const full = modes.full!;
    const lora = modes.lora!;
    const saved = full.liveBytes - lora.liveBytes;
    results.push({
      name: "DPO memory: LoRA / full (live tensor bytes between steps)",
      unit: "fraction",
      ours: lora.liveBytes / full.liveBytes,
      ...(full.ref && lora.ref ? { reference: lora.ref.persistentBytes! / full.ref.persistentBytes! } : {}),
      note: `UNet weights ${(weightBytes / MiB).toFixed(1)} MiB; full holds ${(full.liveBytes / MiB).toFixed(1)} MiB ` +
        `(policy + frozen reference copy + AdamW moments ≈ 4 × the UNet, + text encoder and data), LoRA ${(lora.liveBytes / MiB).toFixed(1)} MiB; ` +
        `the difference, ${(saved / MiB).toFixed(1)} MiB = ${(saved / weightBytes).toFixed(2)} × the UNet weights, is the reference copy and the ` +
        `full AdamW state: LoRA's reference is the same network with adapters off, no second copy`,
    });
    return results;
  },
};
