// `diffusion-dpo train` for SD3 and Flux folders (train.ts hands over when model_index.json names
// StableDiffusion3Pipeline or FluxPipeline): Flow-DPO on the transformer with the same trainer,
// data loader, config and output layout as the UNet models.
//
//   * noising: flow matching from the folder's scheduler table (src/diffusion/flow): SD3 draws
//     σ logit-normal(0, 1) over the shift-3 table (train_dreambooth_sd3's defaults), Flux uniform
//     over the unshifted table (train_dreambooth_flux's weighting_scheme "none");
//   * conditioning: encode_prompt's states and pooled packed into one tensor (src/models/flow-dpo.ts),
//     T5 max_sequence_length 77 (SD3) / 512 (Flux), the training scripts' defaults;
//   * LoRA: diffusers' attention + feed-forward targets when --lora-targets is left at the UNet
//     default; the final file is pytorch_lora_weights.safetensors keyed transformer.*;
//   * full fine-tuning writes final/transformer/ (config.json + weights).
//   * validation grids: FlowMatch Euler from each seed's latents (flowValidationSampler).
//   * --gradient-checkpointing: block by block (src/models/flow-checkpoint.ts).
//   * --nproc: the trainer's data-parallel path (rank-sharded loader, averaged gradients, rank 0 writes).
// Not yet: a training cache.
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { TrainConfig } from "../config/train.js";
import type { PreferenceData } from "../data/open.js";
import { UsageError } from "./errors.js";
import { ProgressBar } from "./progress.js";
import type { ProcessGroup } from "../distributed/process-group.js";

export interface FlowTrainInput {
  cfg: TrainConfig;
  modelDir: string;
  data: PreferenceData;
  device: string;
  /** Per-block gradient checkpointing of the transformer (src/models/flow-checkpoint.ts). */
  gradientCheckpointing?: boolean;
  /** DpoTrainerOptions.overlapBackward (default on). */
  overlapBackward?: boolean;
  /** Data-parallel workers (train --nproc): this rank's group; only rank 0 logs, writes and returns a summary. */
  processGroup?: ProcessGroup;
}

const UNET_DEFAULT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"];

export async function runFlowTrain(o: FlowTrainInput) {
  const { cfg, device } = o;
  const pg = o.processGroup;
  const rank = pg?.rank ?? 0, world = pg?.worldSize ?? 1, isMain = rank === 0;
  const { loadFlowPipeline, disposeFlowPipeline } = await import("../models/flow-generate.js");
  const { SD3Denoiser, FluxDenoiser, FLOW_LORA_TARGETS, flowValidationSampler, injectFlowLora, flowPromptEncoder, flowTrainingNoising } = await import("../models/flow-dpo.js");
  const { sd3TransformerConfigToJson } = await import("../models/sd3/transformer.js");
  const { fluxTransformerConfigToJson } = await import("../models/flux/transformer.js");
  const { DpoTrainer } = await import("../train/trainer.js");
  const { LoaderBatchSource } = await import("../train/data.js");
  const { jsonlMetricsLog } = await import("../train/events.js");
  const { setInitSeed } = await import("../nn/init.js");
  const { getDefaultDevice, setDefaultDevice } = await import("../tensor/index.js");
  const { writeSafetensorsSync } = await import("../io/safetensors.js");

  const previous = getDefaultDevice();
  setDefaultDevice(device);
  let pipe;
  try {
    pipe = loadFlowPipeline(o.modelDir);
  } catch (err) {
    await o.data.close();
    pg?.destroy();
    throw new UsageError(`--model ${cfg.model}: ${(err as Error).message}`);
  } finally {
    setDefaultDevice(previous);
  }
  const flow = pipe;
  const cleanup: (() => void | Promise<void>)[] = [() => o.data.close(), () => disposeFlowPipeline(flow)];
  try {
    const isSd3 = flow.family === "sd3";
    const vae = flow.pipe.vae;
    for (const m of [flow.pipe.textEncoder, flow.pipe.textEncoder2, vae]) m.requiresGrad(false).eval();
    if (flow.family === "sd3") flow.pipe.textEncoder3?.requiresGrad(false).eval();
    const denoiser = flow.family === "sd3" ? new SD3Denoiser(flow.pipe.transformer) : new FluxDenoiser(flow.pipe.transformer);
    denoiser.train();
    let adapters;
    if (cfg.finetune === "lora") {
      const targets = cfg.lora.targets.join(",") === UNET_DEFAULT_TARGETS.join(",") ? FLOW_LORA_TARGETS : cfg.lora.targets;
      try {
        setInitSeed(cfg.seed);
        adapters = injectFlowLora(denoiser, { rank: cfg.lora.rank, alpha: cfg.lora.alpha, targets });
      } catch (err) {
        throw new UsageError(`--lora-targets ${targets.join(",")}: ${(err as Error).message}`);
      }
    }
    const encodePrompts = flowPromptEncoder(flow);
    const noising = flowTrainingNoising(flow.family, flow.pipe.scheduler);
    const factor = 2 ** (vae.config.blockOutChannels.length - 1);
    const resolution = cfg.data.resolution ?? (isSd3 ? flow.pipe.transformer.config.sampleSize * factor : 1024);
    const loader = o.data.loader({ batchSize: cfg.batchSize, augment: { resolution, crop: cfg.data.crop, flip: cfg.data.flip }, seed: cfg.seed, workers: cfg.data.workers, rank, worldSize: world });
    const source = new LoaderBatchSource(loader, cfg.batchSize, device);
    cleanup.unshift(() => source.close());

    const metricsLog = join(cfg.outputDir, "metrics.jsonl");
    const log = isMain ? jsonlMetricsLog(metricsLog) : () => {};
    const bar = isMain ? new ProgressBar("train") : null;
    let startStep = 0, resumedFrom: string | null = null, last: Record<string, number> | null = null, pairsPerSecSum = 0, stepsSeen = 0;
    const trainer = new DpoTrainer({
      config: cfg, model: denoiser, adapters, encodePrompts, noising, data: source, gradientCheckpointing: o.gradientCheckpointing === true, overlapBackward: o.overlapBackward !== false,
      processGroup: pg,
      encodeImages: (px, noise) => vae.encodeLatents(px, noise),
      sampleValidation: flowValidationSampler({
        family: flow.family, encodePrompts, scheduler: flow.pipe.scheduler, steps: cfg.validation.steps, guidanceScale: cfg.validation.guidanceScale,
        shape: [vae.config.latentChannels, resolution / factor, resolution / factor], decode: (x) => vae.decodeLatents(x), device,
      }),
      saveFinal: cfg.finetune === "full" ? (dir) => {
        const out = join(dir, "transformer");
        mkdirSync(out, { recursive: true });
        const config = flow.family === "sd3" ? sd3TransformerConfigToJson(flow.pipe.transformer.config) : fluxTransformerConfigToJson(flow.pipe.transformer.config);
        writeFileSync(join(out, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
        writeSafetensorsSync(join(out, "diffusion_pytorch_model.safetensors"), flow.pipe.transformer.stateDict(), { format: "pt" });
      } : undefined,
      onEvent: (e) => {
        log(e);
        if (e.type === "start") {
          startStep = e.step;
          resumedFrom = e.resumedFrom;
          process.stderr.write(
            `train (${flow.family}, Flow-DPO): ${cfg.method} β=${cfg.beta} ${cfg.finetune}${cfg.finetune === "lora" ? ` r=${cfg.lora.rank}` : ""}, ` +
              `${e.trainableParameters.toLocaleString("en-US")} trainable parameters, effective batch ${e.effectiveBatch}, lr ${e.lr}` +
              `${world > 1 ? `, ${world} processes` : ""}. The loss starts at ln 2 ≈ 0.693.\n`,
          );
        } else if (e.type === "step") {
          last = { ...e.metrics };
          pairsPerSecSum += e.metrics.pairsPerSec;
          stepsSeen++;
          bar?.update(e.step - startStep, e.maxSteps - startStep, `loss ${e.metrics.loss.toFixed(4)} acc ${e.metrics.implicitAcc.toFixed(4)}`);
        } else if (e.type === "warning") process.stderr.write(`\nwarning: ${e.message}\n`);
      },
    });
    cleanup.unshift(() => trainer.dispose());
    const started = performance.now();
    const result = await trainer.run();
    bar?.done();
    if (!isMain) return null;
    return {
      step: result.step, maxSteps: cfg.maxSteps, outputDir: resolve(cfg.outputDir),
      finalPath: result.finalPath === null ? null : resolve(result.finalPath),
      lastCheckpoint: result.lastCheckpoint === null ? null : resolve(result.lastCheckpoint),
      resumedFrom, skippedSteps: result.skippedSteps, elapsedSec: (performance.now() - started) / 1000,
      pairsPerSec: stepsSeen > 0 ? pairsPerSecSum / stepsSeen : 0, last, metricsLog: resolve(metricsLog),
      config: result.lastCheckpoint === null ? "" : resolve(join(result.lastCheckpoint, "config.json")), processes: world,
    };
  } catch (err) {
    const { NonFiniteError } = await import("../train/trainer.js");
    if (err instanceof NonFiniteError) throw new UsageError(err.message);
    throw err;
  } finally {
    for (const f of cleanup) await f();
    pg?.destroy();
  }
}
