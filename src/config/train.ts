// The training configuration: one strict zod schema with documented defaults, and a loader that
// merges defaults < a JSON/YAML file < flags (nanoGPT's and TRL's order). Unknown keys and wrong
// types are errors naming the key and where the value came from. The resolved config is what the
// trainer saves as config.json beside every checkpoint.
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { z } from "zod";
import YAML from "yaml";

const positiveInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();

export const LoraConfigSchema = z.strictObject({
  /** Rank r of the low-rank update. */
  rank: positiveInt.default(8),
  /** α; the update is scaled by α/r. */
  alpha: z.number().positive().default(8),
  /** Module-name suffixes to adapt (diffusers' defaults for the UNet's attention). */
  targets: z.array(z.string().min(1)).min(1).default(["to_q", "to_k", "to_v", "to_out.0"]),
  /**
   * Extra LoRA file written in final/ beside pytorch_lora_weights.safetensors (diffusers, which
   * eval / sample read): "peft" adds adapter_model.safetensors + adapter_config.json, "kohya"
   * adds lora_kohya.safetensors (AUTOMATIC1111 / ComfyUI names). "diffusers": nothing extra.
   */
  format: z.enum(["diffusers", "peft", "kohya"]).default("diffusers"),
});

export const OptimizerConfigSchema = z.strictObject({
  /** AdamW (official SD1.5 recipe) or Adafactor (official SDXL recipe: no relative step, no parameter scaling). */
  kind: z.enum(["adamw", "adafactor"]).default("adamw"),
  betas: z.tuple([z.number().min(0).max(0.999999), z.number().min(0).max(0.999999)]).default([0.9, 0.999]),
  eps: z.number().positive().default(1e-8),
  /** AdamW's decoupled weight decay (official: 1e-2). Adafactor uses 0 unless set. */
  weightDecay: z.number().nonnegative().default(1e-2),
  /** Adafactor's update clipping threshold (official: 1.0). */
  clipThreshold: z.number().positive().default(1.0),
});

export const ValidationConfigSchema = z.strictObject({
  /** Render the validation grid every N optimizer steps; 0 turns validation off. */
  every: nonNegInt.default(0),
  prompts: z.array(z.string()).default(["a photo of a cat", "a red car on a street", "a bowl of fruit", "a lighthouse at dusk"]),
  /** One seed per image column; base and current model use the same seed. */
  seeds: z.array(nonNegInt).min(1).default([0]),
  steps: positiveInt.default(20),
  guidanceScale: z.number().nonnegative().default(7.5),
});

export const MapoConfigSchema = z.strictObject({
  /** MaPO's beta_mapo: weight of the odds-ratio term. */
  weight: z.number().positive().default(0.1),
  /** MaPO's snr_value inside the log-odds sL/(e^{sL} − 1). */
  snrValue: z.number().positive().default(0.2),
});

export const DataConfigSchema = z.strictObject({
  /**
   * The preference pairs: a Pick-a-Pic parquet file, folder or glob of shards, a folder with w/ and
   * l/, a .jsonl file, or a SQLite preference store (src/data's openPreferenceData). Required by
   * the `train` command; library callers that pass their own data source leave it out.
   */
  path: z.string().min(1).optional(),
  /** Force the format instead of detecting it from the path. */
  format: z.enum(["pickapic", "folder", "jsonl", "sqlite"]).optional(),
  /** Count and skip unreadable rows and images instead of stopping. */
  skipBad: z.boolean().default(false),
  /** Drop tied pairs (label 0.5/0.5), as the official script does (~12% of Pick-a-Pic). */
  dropTies: z.boolean().default(true),
  /** Training image side length in pixels; default: the model's own (UNet sample_size × VAE factor). */
  resolution: positiveInt.optional(),
  /** Center crop (official default) or random crop after the resize. */
  crop: z.enum(["center", "random"]).default("center"),
  /** Random horizontal flip, the same for both images of a pair (official default: on). */
  flip: z.boolean().default(true),
  /** Image decoding threads (0 decodes in the training thread). */
  workers: nonNegInt.default(1),
});

export const ReferenceCacheConfigSchema = z.strictObject({
  /**
   * K: fixed (t, ε) draws per pair whose reference errors are computed once before training
   * (src/train/reference-cache.ts). Each step uses one of a pair's K draws, so the policy sees a
   * finite set of K noises per pair instead of a fresh one every step.
   */
  draws: positiveInt,
});

/**
 * Defaults that depend on the fine-tuning mode. Full fine-tuning follows the official script (lr
 * 1e-8 per pair × the effective batch, 500 warmup steps). LoRA follows diffusers' DPO LoRA example
 * and the common LoRA trainers (kohya, SimpleTuner: 1e-4): a LoRA learning rate as applied, not
 * multiplied by the batch, constant, no warmup. With full fine-tuning's 1e-8 × batch a LoRA's
 * adapters barely move (8 pairs: 8e-8).
 */
export const FINETUNE_DEFAULTS = {
  full: { learningRate: 1e-8, scaleLr: true, warmupSteps: 500, lrSchedule: "constant_with_warmup" },
  lora: { learningRate: 1e-4, scaleLr: false, warmupSteps: 0, lrSchedule: "constant" },
} as const;

/** Full-fine-tuning reference copies that serve only metrics (sft, mapo) are off unless asked for. */
const REFERENCE_METRICS_DEFAULT = false;

const TrainConfigObject = z.strictObject({
  /** The base model: a diffusers folder (model_index.json, unet/, text_encoder/, tokenizer/, scheduler/, optional vae/). */
  model: z.string().min(1).default("models/emoji-base"),
  data: DataConfigSchema.prefault({}),
  /** Seed for timesteps, noise, prompt dropout and data order. */
  seed: nonNegInt.default(0),
  /** Loss: "dpo" (the paper), "sft" (MSE on chosen only), "hinge", "ipo", "mapo" (reference-free). */
  method: z.enum(["dpo", "sft", "hinge", "ipo", "mapo"]).default("dpo"),
  /**
   * β in the OFFICIAL convention: inside = −(β/2)·((Lw − Ll) − (Rw − Rl)). Default 5000 (SDXL; the
   * paper's SD1.5 main results use 2000). diffusers' `--beta_dpo 2500` is β = 5000 here.
   */
  beta: z.number().positive().default(5000),
  mapo: MapoConfigSchema.prefault({}),
  /**
   * λ of an SFT term on the chosen image mixed into dpo / hinge / ipo: loss + λ·L_w. 0 (the
   * default) is the paper's loss; λ = β/4 weighs the SFT term like the DPO term at the start.
   */
  sftWeight: z.number().nonnegative().default(0),
  /**
   * Run the frozen reference for the metrics even when the method does not need it (sft, mapo).
   * Off by default: with full fine-tuning it costs a second copy of the network and a forward pass.
   */
  referenceMetrics: z.boolean().default(REFERENCE_METRICS_DEFAULT),
  /**
   * Off by default. `{ draws: K }`: compute the frozen reference's per-sample errors once, for K
   * fixed (t, ε) draws per pair (stored in outputDir/reference-cache.safetensors), and train
   * against them: no reference forward in the step, and full fine-tuning frees its reference copy.
   * Needs the same input for a pair every step (data.flip false, data.crop center, latentSampling
   * mean) and one process.
   */
  referenceCache: ReferenceCacheConfigSchema.optional(),
  /** Target of the denoiser: ε or the velocity v (the official script supports ε only). */
  predictionType: z.enum(["epsilon", "v_prediction"]).default("epsilon"),
  /** Start from an earlier run's weights (LoRA adapters or UNet), fresh optimizer: an on-policy round. */
  initFrom: z.string().min(1).optional(),
  /** VAE latents of the training images: a posterior sample (official: latent_dist.sample()) or its mean. */
  latentSampling: z.enum(["sample", "mean"]).default("sample"),
  /** Probability that a pair's caption is replaced by "" (official: 0.2), so CFG keeps working. */
  promptDropout: z.number().min(0).max(1).default(0.2),

  /** "full" fine-tuning (official; the reference is a frozen copy) or "lora" (the reference is the same network with adapters off). */
  finetune: z.enum(["full", "lora"]).default("full"),
  lora: LoraConfigSchema.prefault({}),

  /** Pairs per micro-batch (per process). */
  batchSize: positiveInt.default(1),
  /** Micro-batches per optimizer step; effective batch = batchSize × gradientAccumulation × processes (paper: 1 × 128 × 16 = 2048). */
  gradientAccumulation: positiveInt.default(1),
  /** Optimizer steps to run. */
  maxSteps: positiveInt.default(2000),
  /**
   * Learning rate. With `scaleLr` (default) this is per pair and is multiplied by the effective
   * batch: the official 1e-8 × 2048 = 2.048e-5. (The paper's text writes (2000/β)·2.048e-8, which
   * disagrees with its own script; we follow the script.)
   */
  /** Default: FINETUNE_DEFAULTS by fine-tuning mode (full 1e-8 per pair, LoRA 1e-4 as applied). */
  learningRate: z.number().nonnegative().optional(),
  /** Multiply learningRate by the effective batch (default: full yes, LoRA no). */
  scaleLr: z.boolean().optional(),
  lrSchedule: z.enum(["constant", "constant_with_warmup", "linear", "cosine"]).optional(),
  /** Warmup in optimizer steps (official full fine-tuning: 500 for SD1.5, 200 for SDXL; LoRA default 0). */
  warmupSteps: nonNegInt.optional(),
  optimizer: OptimizerConfigSchema.prefault({}),
  /** Global gradient-norm clip (official: 1.0); 0 measures only. */
  maxGradNorm: z.number().nonnegative().default(1.0),
  /** "bf16" runs the forward passes under autocast; weights and optimizer state stay f32. */
  mixedPrecision: z.enum(["no", "bf16"]).default("no"),

  /** What to do on a non-finite loss or gradient: stop (keeping the last good checkpoint) or skip the step and count it. */
  onNonFinite: z.enum(["stop", "skip"]).default("stop"),
  /** With onNonFinite "skip": stop anyway after this many skipped steps. */
  maxSkippedSteps: nonNegInt.default(50),

  /** Run folder: checkpoints/, metrics.jsonl, validation/ and the final weights. */
  outputDir: z.string().min(1).default("runs/dpo"),
  /** Write a checkpoint every N optimizer steps (official: 500); 0 only at the end. */
  checkpointEvery: nonNegInt.default(500),
  /** Keep only the newest N checkpoints; 0 keeps all. */
  keepCheckpoints: nonNegInt.default(3),
  /** Continue from the latest checkpoint in outputDir (true), or from the given checkpoint folder. */
  resume: z.union([z.boolean(), z.string().min(1)]).default(false),
  /** Emit a step event every N optimizer steps. */
  logEvery: positiveInt.default(1),

  validation: ValidationConfigSchema.prefault({}),
});

/** The schema with the mode-dependent defaults filled in after parsing. */
export const TrainConfigSchema = TrainConfigObject.superRefine((cfg, ctx) => {
  // sft and mapo are the methods without a reference (losses' methodNeedsReference, which checks the
  // same at the loss); config/ sits below losses/, so the names are spelled here to fail at parse time
  if (cfg.sftWeight > 0 && (cfg.method === "sft" || cfg.method === "mapo")) {
    ctx.addIssue({ code: "custom", path: ["sftWeight"], message: `mixes an SFT term into dpo, hinge or ipo; method "${cfg.method}" already trains on the chosen image (leave it 0)` });
  }
}).transform((cfg) => {
  const d = FINETUNE_DEFAULTS[cfg.finetune];
  return {
    ...cfg,
    learningRate: cfg.learningRate ?? d.learningRate,
    scaleLr: cfg.scaleLr ?? d.scaleLr,
    warmupSteps: cfg.warmupSteps ?? d.warmupSteps,
    lrSchedule: cfg.lrSchedule ?? d.lrSchedule,
  };
});

export type TrainConfig = z.infer<typeof TrainConfigSchema>;
export type TrainConfigInput = z.input<typeof TrainConfigSchema>;

/** The default config (every default filled in). */
export function defaultTrainConfig(): TrainConfig {
  return TrainConfigSchema.parse({});
}

/** Warnings about a resolved config that is valid but probably not what was meant. */
export function configWarnings(cfg: TrainConfig): string[] {
  const out: string[] = [];
  if (cfg.warmupSteps > cfg.maxSteps) {
    out.push(`the learning-rate warmup (${cfg.warmupSteps} steps) is longer than the run (${cfg.maxSteps} steps): the run never reaches its learning rate; lower --warmup or raise --steps`);
  }
  return out;
}

/** Learning rate actually used: learningRate × effective batch with scaleLr, else learningRate. */
export function effectiveLearningRate(cfg: TrainConfig, processes = 1): number {
  return cfg.scaleLr ? cfg.learningRate * cfg.batchSize * cfg.gradientAccumulation * processes : cfg.learningRate;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

export interface LoadTrainConfigOptions {
  /**
   * Layers below the file (lowest first), above the schema defaults: e.g. the model's own
   * prediction type, then the config.json of the checkpoint a run resumes from.
   */
  layers?: Record<string, unknown>[];
  /**
   * How the caller's flags are spelled, by dotted key ({"lora.rank": "--lora-rank"}), so errors
   * name the flag the user typed. Default "--<dotted key>".
   */
  flagNames?: Record<string, string>;
  /** A JSON (.json) or YAML (.yaml/.yml) file holding a (partial) config. */
  file?: string;
  /**
   * Overrides with the highest precedence, as a nested object or with dotted keys
   * ({"lora.rank": "16"}). String values from a command line are converted to the type the
   * schema expects at that key ("16" → 16, "true" → true, "[0.9, 0.99]" → array).
   */
  flags?: Record<string, unknown>;
}

/** Merges defaults < file < flags, validates strictly, and returns the resolved config. */
export function loadTrainConfig(opts: LoadTrainConfigOptions = {}): TrainConfig {
  let fromFile: Record<string, unknown> = {};
  if (opts.file !== undefined) fromFile = readConfigFile(opts.file);
  const fromFlags = opts.flags === undefined ? {} : flagsToObject(opts.flags);
  let below: Record<string, unknown> = {};
  for (const layer of opts.layers ?? []) below = deepMerge(below, flagsToObject(layer));
  const merged = deepMerge(deepMerge(below, fromFile), fromFlags);
  const result = TrainConfigSchema.safeParse(merged);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => describeIssue(issue, fromFile, fromFlags, opts.file, opts.flagNames));
    throw new ConfigError(`invalid training config:\n  ${lines.join("\n  ")}`);
  }
  return result.data;
}

/** Validates an already-merged object (e.g. a config.json read back from a checkpoint). */
export function parseTrainConfig(value: unknown, source = "config"): TrainConfig {
  const result = TrainConfigSchema.safeParse(value);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `${source}: ${issueText(issue)}`);
    throw new ConfigError(`invalid training config:\n  ${lines.join("\n  ")}`);
  }
  return result.data;
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  const ext = extname(path).toLowerCase();
  let value: unknown;
  try {
    if (ext === ".json") value = JSON.parse(text);
    else if (ext === ".yaml" || ext === ".yml") value = YAML.parse(text);
    else throw new ConfigError(`config file ${path}: unknown extension "${ext}"; use .json, .yaml or .yml`);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`config file ${path} is not valid ${ext === ".json" ? "JSON" : "YAML"}: ${(err as Error).message}`);
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new ConfigError(`config file ${path} must hold a mapping of settings at the top level`);
  }
  return value as Record<string, unknown>;
}

type Issue = z.core.$ZodIssue;

function issueText(issue: Issue): string {
  const key = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys.map((k) => (key ? `${key}.${k}` : k));
    return `unknown key${keys.length > 1 ? "s" : ""} ${keys.map((k) => `"${k}"`).join(", ")} (check the spelling; see the documented TrainConfig keys)`;
  }
  return `"${key}": ${issue.message}`;
}

function hasPath(obj: Record<string, unknown>, path: readonly PropertyKey[]): boolean {
  let cur: unknown = obj;
  for (const p of path) {
    if (cur === null || typeof cur !== "object" || !(String(p) in (cur as object))) return false;
    cur = (cur as Record<string, unknown>)[String(p)];
  }
  return true;
}

function describeIssue(
  issue: Issue, file: Record<string, unknown>, flags: Record<string, unknown>, filePath?: string, flagNames?: Record<string, string>,
): string {
  let path: readonly PropertyKey[] = issue.path;
  if (issue.code === "unrecognized_keys" && issue.keys[0] !== undefined) path = [...issue.path, issue.keys[0]];
  const dotted = path.map(String).join(".");
  const where = hasPath(flags, path)
    ? `flag ${flagNames?.[dotted] ?? `--${dotted}`}`
    : hasPath(file, path) && filePath !== undefined
      ? `config file ${filePath}`
      : "config";
  return `${where}: ${issueText(issue)}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

/** Turns {"lora.rank": "16"} into {lora: {rank: 16}}, converting strings to the schema's type. */
function flagsToObject(flags: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const put = (path: string[], value: unknown): void => {
    let cur = out;
    for (const p of path.slice(0, -1)) {
      const next = cur[p];
      if (!isPlainObject(next)) cur[p] = {};
      cur = cur[p] as Record<string, unknown>;
    }
    cur[path[path.length - 1]!] = typeof value === "string" ? coerce(path, value) : value;
  };
  const walk = (prefix: string[], obj: Record<string, unknown>): void => {
    for (const [k, v] of Object.entries(obj)) {
      if (v === undefined) continue;
      const path = [...prefix, ...k.split(".")];
      if (isPlainObject(v)) walk(path, v);
      else put(path, v);
    }
  };
  walk([], flags);
  return out;
}

/** The schema at a dotted path, with defaults/optionals unwrapped; undefined if none. */
function schemaAt(path: string[]): z.core.$ZodType | undefined {
  let cur: z.core.$ZodType | undefined = TrainConfigObject;
  for (const p of path) {
    cur = cur === undefined ? undefined : unwrap(cur);
    if (cur === undefined || cur._zod.def.type !== "object") return undefined;
    cur = (cur as z.ZodObject)._zod.def.shape[p] as z.core.$ZodType | undefined;
  }
  return cur === undefined ? undefined : unwrap(cur);
}

function unwrap(s: z.core.$ZodType): z.core.$ZodType {
  let cur = s;
  for (;;) {
    const def = cur._zod.def as { type: string; innerType?: z.core.$ZodType };
    if ((def.type === "default" || def.type === "prefault" || def.type === "optional") && def.innerType) cur = def.innerType;
    else return cur;
  }
}

function coerce(path: string[], raw: string): unknown {
  const s = schemaAt(path);
  const type = s?._zod.def.type;
  if (type === "string" || type === "enum") return raw;
  if (type === "number") return raw.trim() === "" ? raw : Number(raw);
  if (type === "boolean") return raw === "true" ? true : raw === "false" ? false : raw;
  // arrays, tuples, unions (resume: boolean | path): parse as YAML, keep the string if that fails
  // or yields a string anyway.
  try {
    const v: unknown = YAML.parse(raw);
    return v === null ? raw : v;
  } catch {
    return raw;
  }
}
