// `diffusion-dpo train`: Diffusion-DPO (and its variants) on preference pairs. Thin: resolve the
// config (defaults < the resumed checkpoint's config.json < --config FILE < flags), load the
// model folder and the data, hand them to buildTrainingRun (src/train/run.ts, shared with the demo), render its events (progress bar on stderr,
// metrics.jsonl in the run folder), print a summary (--json: one JSON object on stdout).
//
// --nproc N (N > 1, RANK unset): relaunches this same command as N local workers (torchrun's
// environment variables); each worker joins the process group and trains its shard. Several
// machines, as torchrun: the same command on each with --nnodes M --node-rank k --master-addr
// (node 0's address) --master-port P.
import { defineCommand } from "citty";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { UsageError } from "../errors.js";
import { ProgressBar } from "../progress.js";
import type { PreferenceData } from "../../data/open.js";
import type { TextToImageModel } from "../../models/pipeline.js";
import type { Module } from "../../nn/module.js";

/** Flags that set one config key (dotted), by citty argument name. */
const FLAG_KEYS = {
  model: "model",
  data: "data.path",
  format: "data.format",
  resolution: "data.resolution",
  out: "outputDir",
  method: "method",
  beta: "beta",
  sftWeight: "sftWeight",
  finetune: "finetune",
  loraRank: "lora.rank",
  loraAlpha: "lora.alpha",
  loraTargets: "lora.targets",
  loraFormat: "lora.format",
  lr: "learningRate",
  batch: "batchSize",
  accum: "gradientAccumulation",
  steps: "maxSteps",
  warmup: "warmupSteps",
  schedule: "lrSchedule",
  optimizer: "optimizer.kind",
  seed: "seed",
  predictionType: "predictionType",
  promptDropout: "promptDropout",
  latents: "latentSampling",
  initFrom: "initFrom",
  maxGradNorm: "maxGradNorm",
  onNonFinite: "onNonFinite",
  checkpointEvery: "checkpointEvery",
  keep: "keepCheckpoints",
  validateEvery: "validation.every",
  logEvery: "logEvery",
  workers: "data.workers",
  referenceCache: "referenceCache.draws",
} as const;

const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

export default defineCommand({
  meta: {
    name: "train",
    description:
      "Fine-tune a model on preference pairs with Diffusion-DPO (or sft, hinge, ipo, mapo). The loss starts at ln 2 ≈ 0.693 " +
      "(policy = reference) and moves slowly: that is expected.",
  },
  args: {
    config: { type: "string", description: "JSON or YAML file with training settings (flags win over it; unknown keys are errors)" },
    model: { type: "string", description: "Base model: a diffusers folder (default: models/emoji-base)" },
    data: { type: "string", description: "Preference pairs: Pick-a-Pic parquet (file, folder or glob), a w/ + l/ folder, a .jsonl file or a SQLite store" },
    format: { type: "string", description: "Force the data format: pickapic | folder | jsonl | sqlite (default: detected)" },
    skipBad: { type: "boolean", description: "Count and skip unreadable rows and images instead of stopping (default: false)" },
    resolution: { type: "string", description: "Training image size in pixels (default: the model's)" },
    out: { type: "string", description: "Run folder: checkpoints/, metrics.jsonl, validation/, final/ (default: runs/dpo)" },
    resume: { type: "boolean", description: "Continue from the latest checkpoint in --out, with its saved settings (default: false)" },
    method: { type: "string", description: "Loss: dpo | sft | hinge | ipo | mapo (default: dpo)" },
    beta: { type: "string", description: "β, official convention: inside = −(β/2)·margin; diffusers' --beta_dpo 2500 is 5000 here (default: 5000)" },
    sftWeight: { type: "string", description: "λ of an SFT term on the chosen image mixed into dpo / hinge / ipo: loss + λ·Lw; β/4 weighs it like the DPO term at the start (default: 0, the paper's loss)" },
    lora: { type: "boolean", description: "LoRA fine-tuning: the reference is the same network with adapters off (default: full fine-tuning)" },
    full: { type: "boolean", description: "Full fine-tuning with a frozen reference copy (the default)" },
    finetune: { type: "string", description: "full | lora (same as --full / --lora)" },
    loraRank: { type: "string", description: "LoRA rank r (default: 8)" },
    loraAlpha: { type: "string", description: "LoRA alpha; the update is scaled by alpha/r (default: 8)" },
    loraTargets: { type: "string", description: "Comma-separated module-name suffixes to adapt (default: to_q,to_k,to_v,to_out.0)" },
    loraFormat: { type: "string", description: "LoRA file format in final/ besides diffusers' pytorch_lora_weights.safetensors: diffusers | peft (adapter_model.safetensors + adapter_config.json) | kohya (lora_kohya.safetensors for A1111 / ComfyUI) (default: diffusers)" },
    lr: { type: "string", description: "Learning rate (default full: 1e-8 per pair × the effective batch, the official 1e-8 × 2048; LoRA: 1e-4 as given)" },
    scaleLr: { type: "boolean", description: "Multiply --lr by the effective batch (default: full true, LoRA false; --no-scale-lr uses --lr as given)" },
    batch: { type: "string", description: "Pairs per micro-batch per process (default: 1)" },
    accum: { type: "string", description: "Gradient accumulation steps; effective batch = batch × accum × nproc (default: 1)" },
    steps: { type: "string", description: "Optimizer steps (default: 2000)" },
    warmup: { type: "string", description: "Warmup steps (default full: 500; LoRA: 0)" },
    schedule: { type: "string", description: "LR schedule: constant | constant_with_warmup | linear | cosine (default full: constant_with_warmup; LoRA: constant)" },
    optimizer: { type: "string", description: "adamw | adafactor (default: adamw)" },
    seed: { type: "string", description: "Seed of timesteps, noise, prompt dropout and data order (default: 0)" },
    predictionType: { type: "string", description: "epsilon | v_prediction (default: the model's scheduler)" },
    promptDropout: { type: "string", description: "Probability of an empty caption per pair (default: 0.2)" },
    latents: { type: "string", description: "VAE latents of the training images: sample (the posterior, as the official script) | mean (default: sample)" },
    initFrom: {
      type: "string",
      description: "Start from an earlier run's weights (a run folder, its final/, a checkpoint or a weights file) with a fresh optimizer: the next on-policy round. LoRA: its adapters (same rank and targets); full: its UNet, which also becomes the reference",
    },
    referenceMetrics: { type: "boolean", description: "sft/mapo full fine-tunes: keep a frozen reference copy only to log reference metrics (default: false)" },
    maxGradNorm: { type: "string", description: "Gradient clipping norm, 0 = off (default: 1.0)" },
    bf16: { type: "boolean", description: "bf16 autocast for the forward passes; weights stay f32 (default: false)" },
    overlapBackward: { type: "boolean", default: true, description: "On CPU with ≥ 2 threads, split each step's pairs in two parts and backpropagate the first on a second thread while the second part's forwards run (same gradients up to float rounding; ~1.1× faster on 2 cores). --no-overlap-backward runs each step in one pass (default: on)" },
    gradientCheckpointing: { type: "boolean", description: "Recompute each UNet block in the backward pass instead of keeping its activations: less memory, ~1 more forward per step (default: false)" },
    onNonFinite: { type: "string", description: "stop | skip on a NaN/inf loss or gradient (default: stop)" },
    checkpointEvery: { type: "string", description: "Checkpoint every N steps, 0 = only at the end (default: 500)" },
    keep: { type: "string", description: "Keep the newest N checkpoints, 0 = all (default: 3)" },
    validateEvery: { type: "string", description: "Write a base-vs-current sample grid every N steps, 0 = off (default: 0)" },
    logEvery: { type: "string", description: "Log metrics every N steps (default: 1)" },
    workers: { type: "string", description: "Image decoding threads, 0 = in the training thread (default: 1)" },
    flip: { type: "boolean", description: "Random horizontal flip of each pair (default: on; --no-flip turns it off, as --reference-cache needs)" },
    referenceCache: {
      type: "string",
      description:
        "K: compute the frozen reference's errors once for K fixed (t, ε) draws per pair (in --out/reference-cache.safetensors) and train " +
        "against them: no reference forward per step, full fine-tuning frees its reference copy. Trade-off: the policy sees only K noises " +
        "per pair instead of a fresh one each step. Needs --no-flip and (with a VAE) --latents mean or a training cache; one process (default: off)",
    },
    nproc: { type: "string", description: "Data-parallel worker processes on this machine (default: 1)", default: "1" },
    nnodes: { type: "string", description: "Machines taking part, each running this command with its --node-rank (default: 1)", default: "1" },
    nodeRank: { type: "string", description: "This machine's index in [0, --nnodes) (default: 0)", default: "0" },
    masterAddr: { type: "string", description: "Node 0's address, reachable from every machine (needed with --nnodes > 1; default 127.0.0.1)" },
    masterPort: { type: "string", description: "Rendezvous port on node 0, the same on every machine (needed with --nnodes > 1; default: a free port)" },
    device: { type: "string", description: "cpu or cuda[:N]", default: "cpu" },
    json: { type: "boolean", description: "Print one JSON summary on stdout", default: false },
  },
  async run({ args }) {
    const summary = await train(args as TrainArgs);
    if (summary === null) return; // the launcher parent, or a worker other than rank 0
    if (args.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else {
      process.stderr.write(
        `done: ${summary.step} steps in ${summary.elapsedSec.toFixed(1)} s; final weights in ${summary.finalPath ?? "(not finished)"}; ` +
          `loss ${fmt(summary.last?.loss)} implicitAcc ${fmt(summary.last?.implicitAcc)}\n`,
      );
    }
  },
});

type TrainArgs = Partial<Record<keyof typeof FLAG_KEYS | "config", string>> & {
  lora?: boolean; full?: boolean; bf16?: boolean; resume?: boolean; skipBad?: boolean; scaleLr?: boolean; referenceMetrics?: boolean; flip?: boolean;
  nproc?: string; nnodes?: string; nodeRank?: string; masterAddr?: string; masterPort?: string; device?: string; json?: boolean; gradientCheckpointing?: boolean; overlapBackward?: boolean;
};

function fmt(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? "—" : v.toFixed(4);
}

export interface TrainSummary {
  step: number;
  maxSteps: number;
  outputDir: string;
  finalPath: string | null;
  lastCheckpoint: string | null;
  resumedFrom: string | null;
  skippedSteps: number;
  elapsedSec: number;
  /** Mean pairs/s over this call's steps. */
  pairsPerSec: number;
  /** The last step's metrics. */
  last: Record<string, number> | null;
  /** With --reference-cache: the cache file, whether it was built or reused, and the seconds that took. */
  referenceCache?: { path: string; action: "built" | "reused"; pairs: number; draws: number; seconds: number; referenceFreedBytes: number | null } | null;
  metricsLog: string;
  config: string;
  processes: number;
}

/** Parses the flags into the config's flag layer (dotted keys, strings coerced by the schema). */
function flagLayer(args: TrainArgs): { flags: Record<string, unknown>; names: Record<string, string> } {
  const flags: Record<string, unknown> = {};
  const names: Record<string, string> = {};
  for (const [arg, key] of Object.entries(FLAG_KEYS)) {
    const v = args[arg as keyof typeof FLAG_KEYS];
    names[key] = `--${kebab(arg)}`;
    if (v === undefined) continue;
    if (typeof v !== "string") throw new UsageError(`--${kebab(arg)} needs a value`);
    flags[key] = key === "lora.targets" ? v.split(",").map((s) => s.trim()).filter((s) => s !== "") : v;
  }
  const finetunes = [args.lora ? "lora" : null, args.full ? "full" : null, args.finetune ?? null].filter((x) => x !== null);
  if (new Set(finetunes).size > 1) throw new UsageError(`--lora, --full and --finetune disagree (${finetunes.join(" vs ")}); give one`);
  if (finetunes[0] !== undefined) {
    flags.finetune = finetunes[0];
    names.finetune = args.lora ? "--lora" : args.full ? "--full" : "--finetune";
  }
  if (args.bf16 !== undefined) flags.mixedPrecision = args.bf16 ? "bf16" : "no";
  names.mixedPrecision = "--bf16";
  if (args.skipBad !== undefined) flags["data.skipBad"] = args.skipBad;
  names["data.skipBad"] = "--skip-bad";
  if (args.scaleLr !== undefined) flags.scaleLr = args.scaleLr;
  names.scaleLr = "--scale-lr";
  if (args.referenceMetrics !== undefined) flags.referenceMetrics = args.referenceMetrics;
  names.referenceMetrics = "--reference-metrics";
  if (args.flip !== undefined) flags["data.flip"] = args.flip;
  names["data.flip"] = "--flip";
  if (args.resume) flags.resume = true;
  names.resume = "--resume";
  return { flags, names };
}

function positiveInt(raw: string | undefined, flag: string): number {
  const n = Number(raw);
  if (raw === undefined || !Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer, got "${raw}"`);
  return n;
}

/** Runs the command; null when this process is the launcher or a non-zero rank. */
export async function train(args: TrainArgs): Promise<TrainSummary | null> {
  const nproc = positiveInt(args.nproc ?? "1", "--nproc");
  const nnodes = positiveInt(args.nnodes ?? "1", "--nnodes");
  // every process of the job, on all machines: the data must hold a batch for each
  const processes = nproc * nnodes;
  const { ConfigError, loadTrainConfig } = await import("../../config/train.js");
  const { latestCheckpoint } = await import("../../train/checkpoint.js");
  const { flags, names } = flagLayer(args);
  if (args.config !== undefined && !existsSync(args.config)) throw new UsageError(`--config ${args.config}: no such file`);

  const resolveConfig = (layers: Record<string, unknown>[]) => {
    try {
      return loadTrainConfig({ file: args.config, flags, layers, flagNames: names });
    } catch (err) {
      if (err instanceof ConfigError) throw new UsageError(err.message);
      throw err;
    }
  };
  // A resumed run starts from the settings saved with its latest checkpoint.
  let cfg = resolveConfig([]);
  const checkpointLayer: Record<string, unknown>[] = [];
  if (cfg.resume === true) {
    const latest = latestCheckpoint(cfg.outputDir);
    if (latest !== null && existsSync(join(latest, "config.json"))) {
      const saved = JSON.parse(readFileSync(join(latest, "config.json"), "utf8")) as Record<string, unknown>;
      checkpointLayer.push(saved);
      cfg = resolveConfig(checkpointLayer);
    }
  }

  // ---- the model ----
  const modelDir = resolve(cfg.model);
  if (!existsSync(modelDir) || !statSync(modelDir).isDirectory() || !existsSync(join(modelDir, "model_index.json"))) {
    throw new UsageError(
      `--model ${cfg.model}: ${existsSync(modelDir) ? "is not a diffusers model folder (no model_index.json)" : "no such folder"}. ` +
        "Give a diffusers folder (model_index.json, unet/, text_encoder/, tokenizer/, scheduler/), e.g. models/emoji-base",
    );
  }
  if (cfg.data.path === undefined) throw new UsageError("--data is required: preference pairs (parquet, a w/ + l/ folder, .jsonl or a SQLite store)");
  const dataPath = cfg.data.path;

  // the data before the model: a wrong path fails fast. A training cache (`diffusion-dpo cache`)
  // holds latents and prompt encodings in place of images: the VAE and text encoders never run.
  const { openPreferenceData } = await import("../../data/open.js");
  const { isTrainingCache, TrainingCache } = await import("../../train/cache.js");
  let data: PreferenceData | null = null;
  let cache: InstanceType<typeof TrainingCache> | null = null;
  if (isTrainingCache(dataPath)) {
    try {
      cache = new TrainingCache(dataPath);
    } catch (err) {
      throw new UsageError(`--data ${dataPath}: ${(err as Error).message}`);
    }
    const m = cache.manifest;
    const problem = resolve(m.model) !== modelDir ? `was encoded with the model ${m.model}, not --model ${cfg.model}; train that model or write a new cache`
      : cfg.data.resolution !== undefined && cfg.data.resolution !== m.resolution ? `holds ${m.resolution}-pixel latents; --resolution ${cfg.data.resolution} needs a new cache`
      : processes > 1 ? "is a training cache, which trains in one process (leave --nproc and --nnodes out)"
      : m.pairs < cfg.batchSize ? `holds ${m.pairs} pairs, fewer than one batch of ${cfg.batchSize}` : null;
    if (problem !== null) {
      cache.close();
      throw new UsageError(`--data ${dataPath}: ${problem}`);
    }
  } else {
    try {
      data = openPreferenceData(dataPath, { format: cfg.data.format, skipBad: cfg.data.skipBad, dropTies: cfg.data.dropTies });
    } catch (err) {
      throw new UsageError(`--data ${dataPath}: ${(err as Error).message}`);
    }
    try {
      await checkEnoughPairs(data, dataPath, cfg.batchSize * processes);
    } catch (err) {
      await data.close();
      throw err;
    }
  }

  if (cfg.referenceCache !== undefined && nproc > 1) {
    await data?.close();
    cache?.close();
    throw new UsageError("--reference-cache trains in one process for now: leave --nproc out (or drop --reference-cache)");
  }

  // --nproc N: the settings, model folder and data are checked once here, then this same command
  // runs as N workers (each with RANK set, so it does not relaunch)
  if (processes > 1 && process.env.RANK === undefined) {
    await data?.close();
    const { launchLocal, WorkerFailedError } = await import("../../distributed/launch.js");
    const { getNumThreads } = await import("../../tensor/index.js");
    const nodeRank = Number(args.nodeRank ?? "0");
    if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new UsageError(`--node-rank must be an integer in [0, ${nnodes}) (--nnodes ${nnodes}), got "${args.nodeRank}"`);
    if (nnodes > 1 && (args.masterAddr === undefined || args.masterPort === undefined)) {
      throw new UsageError("--nnodes > 1 needs --master-addr (node 0's address, reachable from every machine) and --master-port (the same port on every machine)");
    }
    const masterPort = args.masterPort === undefined ? undefined : positiveInt(args.masterPort, "--master-port");
    try {
      await launchLocal({
        nproc, nnodes, nodeRank,
        ...(args.masterAddr !== undefined ? { masterAddr: args.masterAddr } : {}),
        ...(masterPort !== undefined ? { masterPort } : {}),
        args: [...process.execArgv, ...process.argv.slice(1)],
        threadsPerWorker: Math.max(1, Math.floor(getNumThreads() / nproc)),
      });
    } catch (err) {
      if (err instanceof WorkerFailedError) throw new UsageError(`train --nproc ${nproc}${nnodes > 1 ? ` --nnodes ${nnodes} --node-rank ${nodeRank}` : ""}: ${err.message}`);
      throw err;
    }
    return null;
  }

  const tensorLib = await import("../../tensor/index.js");
  const { ProcessGroup } = await import("../../distributed/process-group.js");
  const requestedDevice = args.device ?? "cpu";
  // a CUDA worker joins with NCCL and trains on its own GPU (cuda:LOCAL_RANK), as under torchrun
  const pg = ProcessGroup.fromEnvironment({ device: requestedDevice });
  const rank = pg?.rank ?? 0;
  const world = pg?.worldSize ?? 1;
  const isMain = rank === 0;
  const device = pg ? pg.trainingDevice(requestedDevice) : requestedDevice;
  if (device.startsWith("cuda") && !tensorLib.cudaAvailable()) throw new UsageError(`--device ${device}: CUDA is not available on this machine (run \`diffusion-dpo info\`)`);

  // SD3 / Flux folders: Flow-DPO on the transformer (src/cli/flow-train.ts)
  const { flowFamilyOf } = await import("../../models/flow-generate.js");
  if (flowFamilyOf(modelDir) !== null) {
    if (cache !== null || data === null) {
      cache?.close();
      await data?.close();
      pg?.destroy();
      throw new UsageError(`--model ${cfg.model}: SD3 / Flux folders train from preference data (no training cache yet)`);
    }
    if (cfg.referenceCache !== undefined) {
      await data.close();
      pg?.destroy();
      throw new UsageError(`--model ${cfg.model}: --reference-cache is not wired for SD3 / Flux runs yet; drop it`);
    }
    const { runFlowTrain } = await import("../flow-train.js");
    return runFlowTrain({ cfg, modelDir, data, device, gradientCheckpointing: args.gradientCheckpointing === true, overlapBackward: args.overlapBackward !== false, processGroup: pg ?? undefined });
  }
  const { loadModelFolder, disposeTextToImageModel, isSdxlModel } = await import("../../models/pipeline.js");
  const { NoiseSchedule } = await import("../../diffusion/index.js");
  let model: TextToImageModel;
  try {
    model = loadModelFolder(modelDir, { device, onWarning: (m) => process.stderr.write(`warning: ${m}\n`) });
  } catch (err) {
    await data?.close();
    cache?.close();
    throw new UsageError(`--model ${cfg.model}: ${(err as Error).message}`);
  }
  const schedule = new NoiseSchedule(model.scheduler);
  // the model's own prediction type, unless the user chose one
  // SDXL full fine-tuning: the official recipe's Adafactor and 200 warmup steps (flags, files and a resumed run's settings win)
  const sdxlLayer = isSdxlModel(model) && cfg.finetune === "full" ? { "optimizer.kind": "adafactor", warmupSteps: 200 } : {};
  const modelLayer = { predictionType: schedule.predictionType === "v_prediction" ? "v_prediction" : "epsilon", ...sdxlLayer };
  cfg = resolveConfig([modelLayer, ...checkpointLayer]);
  if (schedule.predictionType !== "epsilon" && schedule.predictionType !== "v_prediction") {
    throw new UsageError(`--model ${cfg.model}: its scheduler predicts "${schedule.predictionType}"; training supports epsilon and v_prediction`);
  }

  const { buildTrainingRun, LoraTargetsError, referenceCacheProblem } = await import("../../train/run.js");
  const refProblem = referenceCacheProblem(cfg, { trainingCache: cache !== null, hasVae: Boolean(model.vae), processes: world });
  if (refProblem !== null) {
    await data?.close();
    cache?.close();
    disposeTextToImageModel(model);
    throw new UsageError(refProblem);
  }
  const { jsonlMetricsLog } = await import("../../train/events.js");

  const cleanup: (() => void | Promise<void>)[] = [() => data?.close(), () => cache?.close(), () => disposeTextToImageModel(model)];
  try {
    const metricsLog = join(cfg.outputDir, "metrics.jsonl");
    const log = isMain ? jsonlMetricsLog(metricsLog) : () => {};
    // made at "start", after the reference cache is ready, so its elapsed time and eta count training only
    const progress: { bar: ProgressBar | null } = { bar: null };
    let startStep = 0;
    let resumedFrom: string | null = null;
    let last: Record<string, number> | null = null;
    let referenceCache: TrainSummary["referenceCache"] | null = null;
    let referenceProgressShown = false;
    let pairsPerSecSum = 0;
    let stepsSeen = 0;
    let run: Awaited<ReturnType<typeof buildTrainingRun>>;
    try {
      run = await buildTrainingRun({
        model, config: cfg, data: cache !== null ? { cache } : { pairs: data! }, device, processGroup: pg ?? undefined,
        gradientCheckpointing: args.gradientCheckpointing === true,
        overlapBackward: args.overlapBackward !== false,
        prepareUNet: cfg.initFrom !== undefined ? (unet) => initWeightsFrom(unet, cfg.initFrom!, cfg.finetune) : undefined,
        onEvent: (e) => {
          log(e);
          switch (e.type) {
            case "start":
              if (isMain) progress.bar = new ProgressBar("train");
              startStep = e.step;
              resumedFrom = e.resumedFrom;
              if (e.resumedFrom !== null) process.stderr.write(`resuming from ${e.resumedFrom} (step ${e.step})\n`);
              process.stderr.write(
                `train: ${cfg.method} β=${cfg.beta} ${cfg.finetune}${cfg.finetune === "lora" ? ` r=${cfg.lora.rank}` : ""}, ` +
                  `${e.trainableParameters.toLocaleString("en-US")} trainable parameters, effective batch ${e.effectiveBatch}, lr ${e.lr}` +
                  `${world > 1 ? `, ${world} processes` : ""}. The loss starts at ln 2 ≈ 0.693.\n`,
              );
              break;
            case "step": {
              last = { ...e.metrics };
              pairsPerSecSum += e.metrics.pairsPerSec;
              stepsSeen++;
              const detail = `${startStep > 0 ? `step ${e.step}/${e.maxSteps} ` : ""}loss ${fmt(e.metrics.loss)} acc ${fmt(e.metrics.implicitAcc)} ` +
                `${e.metrics.pairsPerSec.toFixed(1)} pairs/s`;
              progress.bar?.update(e.step - startStep, e.maxSteps - startStep, detail);
              break;
            }
            case "warning":
              process.stderr.write(`\nwarning: ${e.message}\n`);
              break;
            case "reference-cache-progress":
              if (!referenceProgressShown) process.stderr.write(`reference cache: computing the reference's errors for ${e.draws} draws per pair…\n`);
              referenceProgressShown = true;
              break;
            case "reference-cache": {
              const { type: _t, step: _s, ...rest } = e;
              referenceCache = rest;
              process.stderr.write(
                `reference cache ${e.action} (${e.path}): ${e.pairs} pairs × ${e.draws} draws in ${e.seconds.toFixed(1)} s` +
                  `${e.referenceFreedBytes !== null ? `; reference copy freed (${(e.referenceFreedBytes / 2 ** 20).toFixed(1)} MiB)` : ""}\n`,
              );
              break;
            }
            default:
              break;
          }
        },
      });
    } catch (err) {
      if (err instanceof LoraTargetsError) throw new UsageError(`--lora-targets ${cfg.lora.targets.join(",")}: ${err.message}`);
      throw err;
    }
    cleanup.unshift(() => run.dispose());
    const started = performance.now();
    const result = await run.run();
    progress.bar?.done();
    if (!isMain) return null;
    return {
      step: result.step,
      maxSteps: cfg.maxSteps,
      outputDir: resolve(cfg.outputDir),
      finalPath: result.finalPath === null ? null : resolve(result.finalPath),
      lastCheckpoint: result.lastCheckpoint === null ? null : resolve(result.lastCheckpoint),
      resumedFrom,
      skippedSteps: result.skippedSteps,
      elapsedSec: (performance.now() - started) / 1000,
      pairsPerSec: stepsSeen > 0 ? pairsPerSecSum / stepsSeen : 0,
      last,
      referenceCache,
      metricsLog: resolve(metricsLog),
      config: result.lastCheckpoint === null ? "" : resolve(join(result.lastCheckpoint, "config.json")),
      processes: world,
    };
  } catch (err) {
    const { NonFiniteError } = await import("../../train/trainer.js");
    if (err instanceof NonFiniteError) throw new UsageError(err.message);
    throw err;
  } finally {
    for (const f of cleanup) await f();
    pg?.destroy();
  }
}

/**
 * A streaming loader over too few pairs would wait for a batch forever (every epoch yields
 * none): refuse up front. Counts rows from the sources' unit sizes; small sets (≤ 4096 rows) are
 * read through to count usable pairs (ties dropped, bad rows skipped).
 */
async function checkEnoughPairs(data: { rowCount(): Promise<number>; pairs(): AsyncGenerator<unknown> }, path: string, need: number): Promise<void> {
  let rows: number;
  try {
    rows = await data.rowCount();
  } catch (err) {
    throw new UsageError(`--data ${path}: ${(err as Error).message}`);
  }
  let usable = rows;
  if (rows > 0 && rows <= 4096) {
    usable = 0;
    try {
      for await (const _ of data.pairs()) if (++usable >= need) break;
    } catch (err) {
      throw new UsageError(`--data ${path}: ${(err as Error).message} (pass --skip-bad to skip bad rows)`);
    }
  }
  if (usable === 0) throw new UsageError(`--data ${path}: holds no usable preference pairs${rows > 0 ? ` (${rows} rows, all ties or bad)` : ""}`);
  if (usable < need) {
    throw new UsageError(`--data ${path}: ${usable} usable pairs, fewer than one batch of ${need} (--batch × --nproc × --nnodes); lower --batch or add data`);
  }
}

/**
 * Loads an earlier run's trainable weights into the policy before training starts (on-policy
 * rounds: `pairs --model RUN`, `label`, `train --init-from RUN`). LoRA: the adapters, which must
 * have this run's rank and targets (the reference stays the base, adapters off). Full: the UNet
 * weights, loaded before the trainer copies its reference, so the reference is the previous round.
 */
async function initWeightsFrom(unet: Module, spec: string, finetune: "full" | "lora"): Promise<void> {
  const lib = await import("../../eval/init-from.js");
  try {
    lib.initWeightsFrom(unet, spec, finetune);
  } catch (err) {
    // the library names the spec; the CLI adds the flag
    throw new UsageError(`--init-from ${(err as Error).message}`);
  }
}
