// Keys in a model folder's config files that this implementation neither uses nor checks. Each is
// reported (not silently dropped): a key we do not read may change what diffusers would build or
// sample, so the user should know the folder is not loaded exactly as written.
import { SCHEDULER_CLASS_SAMPLERS } from "../diffusion/samplers/registry.js";

/** Bookkeeping keys transformers writes into every config.json; never behaviour. */
const TRANSFORMERS_METADATA = new Set([
  "architectures", "model_type", "torch_dtype", "transformers_version", "_name_or_path", "_commit_hash",
  // training-time only (dropout is off at inference and in our frozen encoders)
  "attention_dropout", "dropout", "initializer_range", "initializer_factor",
]);

function isMetadata(key: string): boolean {
  return key.startsWith("_") || TRANSFORMERS_METADATA.has(key);
}

/**
 * "path: ignored key(s) a, b (…)" or null when every key is known. `inertAt` lists keys we do not
 * read that are harmless at the given value (their library default).
 */
export function unknownKeysWarning(
  json: Record<string, unknown>, known: Iterable<string>, source: string, inertAt: Record<string, unknown> = {},
): string | null {
  const knownSet = new Set(known);
  const inert = (k: string): boolean => k in inertAt && JSON.stringify(json[k]) === JSON.stringify(inertAt[k]);
  const unknown = Object.keys(json).filter((k) => !knownSet.has(k) && !isMetadata(k) && !inert(k));
  if (unknown.length === 0) return null;
  return `${source}: ignored unknown key${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")} ` +
    "(this implementation does not read them; the model may not behave exactly as in diffusers/transformers)";
}

/** AutoencoderKL keys that only some pipelines use, harmless at diffusers' default (null). */
export const VAE_INERT_KEYS: Record<string, unknown> = { latents_mean: null, latents_std: null };

/** The keys parseUNetConfig reported as ignored (it already knows every key the UNet reads). */
export function unetConfigWarning(json: Record<string, unknown>, ignoredKeys: readonly string[], source: string): string | null {
  return ignoredKeys.length === 0 ? null : unknownKeysWarning(Object.fromEntries(ignoredKeys.map((k) => [k, json[k]])), [], source);
}

/**
 * Scheduler settings that change sampling in diffusers but that our samplers do not implement:
 * their diffusers defaults, so a folder that keeps the defaults gets no warning.
 */
const SCHEDULER_DEFAULTS: Record<string, unknown> = {
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  final_sigmas_type: "zero",
  timestep_type: "discrete",
  interpolation_type: "linear",
  sigma_min: null,
  sigma_max: null,
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  variance_type: "fixed_small",
  algorithm_type: "dpmsolver++",
  solver_order: 2,
  solver_type: "midpoint",
  lower_order_final: true,
  euler_at_final: false,
  lambda_min_clipped: null,
  use_lu_lambdas: false,
  skip_prk_steps: true,
};

/** Keys the schedule reader uses (src/diffusion/schedule.ts scheduleConfigFromDiffusers). */
const SCHEDULER_READ = new Set([
  "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr",
  "prediction_type", "timestep_spacing", "steps_offset", "clip_sample", "clip_sample_range", "set_alpha_to_one",
]);

/** Settings we cannot honour (non-default values) and keys we do not know, in one warning. */
export function schedulerConfigWarning(json: Record<string, unknown>, source: string): string | null {
  const differs: string[] = [];
  const unknown: string[] = [];
  for (const [key, value] of Object.entries(json)) {
    if (key.startsWith("_") || SCHEDULER_READ.has(key)) continue;
    if (key in SCHEDULER_DEFAULTS) {
      // PNDM's skip_prk_steps and DPM-Solver's tuning do not apply to the sampler we run
      if (JSON.stringify(value) !== JSON.stringify(SCHEDULER_DEFAULTS[key]) && key !== "skip_prk_steps") differs.push(`${key}=${JSON.stringify(value)}`);
    } else {
      unknown.push(key);
    }
  }
  const parts: string[] = [];
  if (differs.length > 0) parts.push(`${differs.join(", ")} ${differs.length > 1 ? "are" : "is"} not supported: sampling uses the diffusers defaults instead and will differ from diffusers`);
  if (unknown.length > 0) parts.push(`ignored unknown key${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}`);
  return parts.length === 0 ? null : `${source}: ${parts.join("; ")}`;
}

/** A scheduler class with no sampler of its own here samples with DDIM: say so. */
export function schedulerClassWarning(schedulerClass: string | undefined, source: string): string | null {
  if (schedulerClass === undefined || schedulerClass in SCHEDULER_CLASS_SAMPLERS) return null;
  return `${source}: scheduler class ${schedulerClass} has no sampler here; sampling defaults to DDIM ` +
    `(choose one with --sampler: ${Object.values(SCHEDULER_CLASS_SAMPLERS).join(", ")})`;
}
