// Diffusion-DPO training pairs/s on an SDXL-architecture UNet (diffusers' SDXL layout —
// DownBlock2D + two CrossAttnDownBlock2D, 1/2/4 transformer layers, linear projections, the
// "text_time" added conditioning — at widths 32/64/128, 32×32 latents), full fine-tuning and LoRA
// r 8, from cached conditioning (text states, pooled embeddings, time ids) as a run from a
// training cache trains; beside PyTorch doing the same step (bench/torch/dpo_sdxl.py) in the same
// run, the two sides alternating step by step as in bench/cases/dpo.ts.
//
// Ours is the real trainer (DpoTrainer: shared t/ε per pair, prompt dropout, policy forward +
// backward, reference forward without autograd, loss, clip 1.0, AdamW) over latents; the
// conditioning comes packed (src/models/sdxl/conditioning.ts), so the UNet unpacks it per call.
// The gradient-checkpointed variant (--gradient-checkpointing) is timed too (ours only).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BenchCase, BenchResult } from "../types.js";
import { Generator, keep, randn, setNumThreads, tensor, type Tensor } from "../../src/tensor/index.js";
import { toDiffusersConfig, resolveUNetConfig, type UNetConfig } from "../../src/models/unet/config.js";
import { UNet2DConditionModel } from "../../src/models/unet/unet.js";
import { packConditioning } from "../../src/models/sdxl/conditioning.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { injectLora } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { DpoTrainer, loraAdapters } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import { median } from "./engine.js";
import { AlternatingSource, TorchTwin, pairedRatioSpread } from "../alternating.js";

const PAIRS = 2;
const LATENT = 32;
const SEQ = 77;
const TEXT = 64; // two encoders' widths, 32 + 32
const POOLED = 32;
const RANK = 8;
const BETA = 5000;
const MiB = 2 ** 20;

export const SDXL_BENCH_UNET: UNetConfig = resolveUNetConfig({
  sampleSize: LATENT,
  downBlockTypes: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  upBlockTypes: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  blockOutChannels: [32, 64, 128],
  attentionHeadDim: [1, 2, 4],
  transformerLayersPerBlock: [1, 2, 4],
  useLinearProjection: true,
  crossAttentionDim: TEXT,
  additionEmbedType: "text_time",
  additionTimeEmbedDim: 8,
  projectionClassEmbeddingsInputDim: POOLED + 6 * 8,
});


type Mode = "full" | "lora" | "lora-checkpointed";

async function runMode(mode: Mode, threads: number, steps: number, warmup: number): Promise<{ ours: number[]; theirs: number[]; liveBytes: number; error?: string; trainable: number }> {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(SDXL_BENCH_UNET);
  const lora = mode !== "full";
  const worker = mode === "lora-checkpointed" ? null : new TorchTwin("dpo_sdxl.py", threads, {
    unet: toDiffusersConfig(SDXL_BENCH_UNET), mode: lora ? "lora" : "full", pairs: PAIRS, seq_len: SEQ, pooled: POOLED,
    beta: BETA, rank: RANK, alpha: RANK, latent: LATENT,
  });
  const out = mkdtempSync(join(tmpdir(), `bench-dpo-sdxl-${mode}-`));
  const g = new Generator(0);
  const n = 4 * PAIRS;
  const prompts = Array.from({ length: n }, (_, i) => `prompt ${i}`);
  // cached conditioning: one packed tensor per prompt and for "" (prompt dropout)
  const timeIds = tensor([8 * LATENT, 8 * LATENT, 0, 0, 8 * LATENT, 8 * LATENT], [1, 6]);
  const table = new Map<string, Tensor>();
  for (const p of ["", ...prompts]) table.set(p, keep(packConditioning(randn([1, SEQ, TEXT], g), { textEmbeds: randn([1, POOLED], g), timeIds })));
  const inner = new TensorPairSource({ prompts, chosen: randn([n, 4, LATENT, LATENT], g), rejected: randn([n, 4, LATENT, LATENT], g) }, PAIRS, 0);
  let error: string | undefined;
  try {
    if (worker !== null) {
      const theirs = (await worker.call("params")).value as number;
      if (theirs !== unet.numParameters()) throw new Error(`dpo-sdxl: ours has ${unet.numParameters()} parameters, PyTorch ${theirs}; keep the architectures identical`);
    }
  } catch (e) {
    error = (e as Error).message;
  }
  const source = new AlternatingSource(inner, error === undefined ? worker : null);
  if (lora) injectLora(unet, { rank: RANK, alpha: RANK, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
  const config = loadTrainConfig({
    flags: {
      seed: 0, method: "dpo", beta: BETA, finetune: lora ? "lora" : "full", "lora.rank": RANK, "lora.alpha": RANK, batchSize: PAIRS,
      maxSteps: steps, learningRate: 1e-5, scaleLr: false, warmupSteps: 0, lrSchedule: "constant", checkpointEvery: 0, keepCheckpoints: 1,
      predictionType: "epsilon", promptDropout: 0.2, outputDir: out,
    },
  });
  const { cat } = await import("../../src/tensor/index.js");
  const trainer = new DpoTrainer({
    config, model: unet, adapters: lora ? loraAdapters(unet) : undefined,
    encodePrompts: (ps) => cat(ps.map((p) => table.get(p)!), 0),
    schedule: new NoiseSchedule(), data: source, saveFinal: () => {}, gradientCheckpointing: mode === "lora-checkpointed",
    onEvent: (e) => { if (e.type === "step") source.stepDone(); },
  });
  try {
    await trainer.run();
    return {
      ours: source.ours.slice(warmup), theirs: source.theirs.slice(warmup), liveBytes: source.liveBytes, error: error ?? source.error,
      trainable: unet.trainableParameters().reduce((a, [, p]) => a + p.size, 0),
    };
  } finally {
    trainer.dispose();
    worker?.close();
    inner.dispose();
    for (const t of table.values()) t.dispose();
    timeIds.dispose();
    unet.dispose();
    rmSync(out, { recursive: true, force: true });
  }
}

export const dpoSdxlBench: BenchCase = {
  name: "dpo-sdxl",
  async run({ quick, threads }) {
    setNumThreads(threads);
    const warmup = 1;
    const reps = quick ? 3 : 10;
    const results: BenchResult[] = [];
    for (const mode of ["lora", "lora-checkpointed", "full"] as const) {
      const m = await runMode(mode, threads, warmup + reps, warmup);
      const ours = PAIRS / median(m.ours);
      const ref = m.theirs.length > 0 ? PAIRS / median(m.theirs) : undefined;
      const label = mode === "full" ? "full fine-tuning" : mode === "lora" ? `LoRA r${RANK}` : `LoRA r${RANK}, gradient checkpointing (ours only)`;
      results.push({
        name: `DPO training, ${label} (SDXL arch 32/64/128, ${PAIRS} pairs of 32×32 latents, cached conditioning)`,
        unit: "pairs/s", ours,
        ...(ref !== undefined ? { reference: ref, ratio: ours / ref, ratioSpread: pairedRatioSpread(m.ours, m.theirs) } : {}),
        note: [
          `${(median(m.ours) * 1e3).toFixed(0)} ms per step here${ref !== undefined ? `, ${(median(m.theirs) * 1e3).toFixed(0)} ms in PyTorch` : ""}`,
          `${m.trainable.toLocaleString("en")} trainable parameters`,
          `live tensor bytes between steps ${(m.liveBytes / MiB).toFixed(1)} MiB`,
          ...(m.error ? [`PyTorch reference failed: ${m.error}`] : []),
        ].join("; "),
      });
    }
    return results;
  },
};
