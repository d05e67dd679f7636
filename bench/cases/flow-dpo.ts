// Flow-DPO training pairs/s on a tiny SD3 transformer (MMDiT: 4 joint blocks, 4 heads × 32,
// patch 2 on 16 × 32 × 32 latents = 256 image tokens + 77 text tokens), LoRA r 8 on diffusers' SD3
// targets and full fine-tuning, from cached conditioning; beside PyTorch doing the same step
// (bench/torch/flow_dpo_sd3.py: the same transformer in plain torch.nn, parameter counts asserted
// equal) in the same run, the two sides alternating step by step as in bench/cases/dpo-sdxl.ts.
//
// Ours is the real trainer (DpoTrainer with the SD3 flow noising: σ logit-normal over the shift-3
// table, shared σ/ε per pair, x_t = (1 − σ)x0 + σε, target ε − x0; prompt dropout 0.2; policy
// forward + backward, reference forward without autograd, loss, clip 1.0, AdamW).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BenchCase, BenchResult } from "../types.js";
import { Generator, cat, keep, randn, setNumThreads, type Tensor } from "../../src/tensor/index.js";
import { SD3Transformer2DModel, sd3TransformerConfigToJson, type SD3TransformerConfig } from "../../src/models/sd3/transformer.js";
import { SD3Denoiser, flowTrainingNoising, injectFlowLora, packFlowConditioning } from "../../src/models/flow-dpo.js";
import type { FlowMatchSchedulerConfig } from "../../src/diffusion/flow/scheduler.js";
import { setInitSeed } from "../../src/nn/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import { median } from "./engine.js";
import { AlternatingSource, TorchTwin, pairedRatioSpread } from "../alternating.js";

const PAIRS = 2;
const LATENT = 32;
const SEQ = 77;
const RANK = 8;
const BETA = 5000;
const MiB = 2 ** 20;

export const FLOW_BENCH_SD3: SD3TransformerConfig = {
  sampleSize: LATENT, patchSize: 2, inChannels: 16, outChannels: 16, numLayers: 4, attentionHeadDim: 32, numAttentionHeads: 4,
  jointAttentionDim: 256, captionProjectionDim: 128, pooledProjectionDim: 128, posEmbedMaxSize: LATENT / 2, qkNorm: null,
};

/** SD3's scheduler_config.json (FlowMatchEulerDiscreteScheduler, shift 3). */
const SCHEDULER: FlowMatchSchedulerConfig = {
  numTrainTimesteps: 1000, shift: 3, useDynamicShifting: false, baseShift: 0.5, maxShift: 1.15, baseImageSeqLen: 256, maxImageSeqLen: 4096,
};


type Mode = "lora" | "full";

interface ModeResult {
  ours: number[];
  theirs: number[];
  liveBytes: number;
  rss: number;
  ref: Record<string, number> | null;
  error?: string;
  params: number;
  trainable: number;
}

async function runMode(mode: Mode, threads: number, steps: number, warmup: number): Promise<ModeResult> {
  setInitSeed(0);
  const denoiser = new SD3Denoiser(new SD3Transformer2DModel(FLOW_BENCH_SD3));
  const lora = mode === "lora";
  const worker = new TorchTwin("flow_dpo_sd3.py", threads, {
    transformer: sd3TransformerConfigToJson(FLOW_BENCH_SD3), mode, pairs: PAIRS, seq_len: SEQ, beta: BETA, rank: RANK, alpha: RANK, latent: LATENT,
  });
  const out = mkdtempSync(join(tmpdir(), `bench-flow-dpo-${mode}-`));
  const g = new Generator(0);
  const n = 4 * PAIRS;
  const prompts = Array.from({ length: n }, (_, i) => `prompt ${i}`);
  const c = FLOW_BENCH_SD3;
  // cached conditioning: one packed tensor (states + pooled) per prompt and for "" (prompt dropout)
  const table = new Map<string, Tensor>();
  for (const p of ["", ...prompts]) table.set(p, keep(packFlowConditioning(randn([1, SEQ, c.jointAttentionDim], g), randn([1, c.pooledProjectionDim], g))));
  const inner = new TensorPairSource({ prompts, chosen: randn([n, c.inChannels, LATENT, LATENT], g), rejected: randn([n, c.inChannels, LATENT, LATENT], g) }, PAIRS, 0);
  const params = denoiser.numParameters();
  const adapters = lora ? injectFlowLora(denoiser, { rank: RANK, alpha: RANK }) : undefined;
  const trainable = denoiser.trainableParameters().reduce((a, [, p]) => a + p.size, 0);
  let error: string | undefined;
  try {
    const theirs = (await worker.call("params")).value as number;
    if (theirs !== params) throw new Error(`flow-dpo: ours has ${params} parameters, PyTorch ${theirs}; keep the architectures identical`);
    const theirTrainable = (await worker.call("trainable")).value as number;
    if (theirTrainable !== trainable) throw new Error(`flow-dpo ${mode}: ours trains ${trainable} parameters, PyTorch ${theirTrainable}; keep the LoRA targets identical`);
  } catch (e) {
    error = (e as Error).message;
  }
  const source = new AlternatingSource(inner, error === undefined ? worker : null);
  const config = loadTrainConfig({
    flags: {
      seed: 0, method: "dpo", beta: BETA, finetune: mode, "lora.rank": RANK, "lora.alpha": RANK, batchSize: PAIRS,
      maxSteps: steps, learningRate: 1e-5, scaleLr: false, warmupSteps: 0, lrSchedule: "constant", checkpointEvery: 0, keepCheckpoints: 1,
      promptDropout: 0.2, outputDir: out,
    },
  });
  const trainer = new DpoTrainer({
    config, model: denoiser, adapters,
    encodePrompts: (ps) => cat(ps.map((p) => table.get(p)!), 0),
    noising: flowTrainingNoising("sd3", SCHEDULER), data: source, saveFinal: () => {},
    onEvent: (e) => { if (e.type === "step") source.stepDone(); },
  });
  try {
    await trainer.run();
    const ref = error === undefined && source.error === undefined ? ((await worker.call("memory")).value as Record<string, number>) : null;
    return {
      ours: source.ours.slice(warmup), theirs: source.theirs.slice(warmup), liveBytes: source.liveBytes, rss: process.memoryUsage().rss,
      ref, error: error ?? source.error, params, trainable,
    };
  } finally {
    trainer.dispose();
    worker.close();
    inner.dispose();
    for (const t of table.values()) t.dispose();
    denoiser.dispose();
    rmSync(out, { recursive: true, force: true });
  }
}

export const flowDpoBench: BenchCase = {
  name: "flow-dpo",
  async run({ quick, threads }) {
    setNumThreads(threads);
    const warmup = 1;
    const reps = quick ? 3 : 10;
    const results: BenchResult[] = [];
    for (const mode of ["lora", "full"] as const) {
      const m = await runMode(mode, threads, warmup + reps, warmup);
      const ours = PAIRS / median(m.ours);
      const ref = m.theirs.length > 0 ? PAIRS / median(m.theirs) : undefined;
      results.push({
        name: `Flow-DPO training, ${mode === "lora" ? `LoRA r${RANK}` : "full fine-tuning"} (tiny SD3 MMDiT 4×128, ${PAIRS} pairs of 16×32×32 latents, cached conditioning)`,
        unit: "pairs/s", ours,
        ...(ref !== undefined ? { reference: ref, ratio: ours / ref, ratioSpread: pairedRatioSpread(m.ours, m.theirs) } : {}),
        note: [
          `${(median(m.ours) * 1e3).toFixed(0)} ms per step here${ref !== undefined ? `, ${(median(m.theirs) * 1e3).toFixed(0)} ms in PyTorch` : ""}`,
          `${m.params.toLocaleString("en")} parameters (both sides), ${m.trainable.toLocaleString("en")} trainable`,
          `live tensor bytes between steps ${(m.liveBytes / MiB).toFixed(1)} MiB` + (m.ref ? `, PyTorch persistent ${(m.ref.persistentBytes! / MiB).toFixed(1)} MiB` : ""),
          `RSS high-water: ours ${(m.rss / MiB).toFixed(0)} MiB (this process)` + (m.ref ? `, PyTorch ${(m.ref.maxRssBytes! / MiB).toFixed(0)} MiB` : ""),
          ...(m.error ? [`PyTorch reference failed: ${m.error}`] : []),
        ].join("; "),
      });
    }
    return results;
  },
};
