// Noise schedules: β_t, α_t = 1 − β_t, ᾱ_t = ∏ α_s, with diffusers' names and semantics.
//
// Everything here is float64 math on plain arrays (improved-diffusion's rule); tensors are made
// only by `gatherAt`, for a batch of per-sample timesteps. diffusers computes the same tables in
// float32, so its values differ from ours by float32 rounding (≈1e-7 relative), no more.
import { keep, tensor, Tensor, type Device } from "../tensor/index.js";

export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
export type PredictionType = "epsilon" | "v_prediction" | "sample";
export type TimestepSpacing = "leading" | "trailing" | "linspace";

export const BETA_SCHEDULES: readonly BetaSchedule[] = ["linear", "scaled_linear", "squaredcos_cap_v2"];
export const PREDICTION_TYPES: readonly PredictionType[] = ["epsilon", "v_prediction", "sample"];
export const TIMESTEP_SPACINGS: readonly TimestepSpacing[] = ["leading", "trailing", "linspace"];

export interface ScheduleConfig {
  /** T, the number of training timesteps (t ∈ {0 … T−1}). */
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  /** Explicit β_t (diffusers' `trained_betas`); overrides betaSchedule/start/end when given. */
  trainedBetas?: number[] | null;
  /** Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"): ᾱ_{T−1} = 0. */
  rescaleZeroTerminalSnr: boolean;
  predictionType: PredictionType;
  /**
   * How `steps` inference timesteps are spread over {0 … T−1}. Absent: each sampler's diffusers
   * default ("leading" for DDPM/DDIM, "linspace" for Euler, Euler ancestral and DPM-Solver++),
   * which is what diffusers does when it loads SD1.5's scheduler_config.json (no such key).
   */
  timestepSpacing?: TimestepSpacing;
  /** Added to "leading" timesteps (SD1.5: 1, so 50 steps run t = 981 … 1). */
  stepsOffset: number;
  /** DDPM/DDIM: clamp the predicted x0 to ±clipSampleRange. */
  clipSample: boolean;
  clipSampleRange: number;
  /** DDIM: ᾱ used after the last step (true → 1, false → ᾱ_0). */
  setAlphaToOne: boolean;
}

/** Stable Diffusion 1.5's scheduler (its scheduler/scheduler_config.json). */
export const SD15_SCHEDULE: Readonly<ScheduleConfig> = Object.freeze({
  numTrainTimesteps: 1000,
  betaStart: 0.00085,
  betaEnd: 0.012,
  betaSchedule: "scaled_linear",
  trainedBetas: null,
  rescaleZeroTerminalSnr: false,
  predictionType: "epsilon",
  stepsOffset: 1,
  clipSample: false,
  clipSampleRange: 1,
  setAlphaToOne: false,
});

export function scheduleConfig(overrides: Partial<ScheduleConfig> = {}): ScheduleConfig {
  const cfg: ScheduleConfig = { ...SD15_SCHEDULE, ...stripUndefined(overrides) };
  validateScheduleConfig(cfg);
  return cfg;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function fail(where: string, key: string, msg: string): never {
  throw new Error(`${where}: "${key}" ${msg}`);
}

export function validateScheduleConfig(cfg: ScheduleConfig, where = "schedule config"): void {
  const T = cfg.numTrainTimesteps;
  if (!Number.isInteger(T) || T < 2) fail(where, "numTrainTimesteps", `must be an integer ≥ 2, got ${T}`);
  if (!BETA_SCHEDULES.includes(cfg.betaSchedule)) {
    fail(where, "betaSchedule", `must be one of ${BETA_SCHEDULES.join(", ")}; got "${String(cfg.betaSchedule)}"`);
  }
  if (!PREDICTION_TYPES.includes(cfg.predictionType)) {
    fail(where, "predictionType", `must be one of ${PREDICTION_TYPES.join(", ")}; got "${String(cfg.predictionType)}"`);
  }
  if (cfg.timestepSpacing !== undefined && !TIMESTEP_SPACINGS.includes(cfg.timestepSpacing)) {
    fail(where, "timestepSpacing", `must be one of ${TIMESTEP_SPACINGS.join(", ")}; got "${String(cfg.timestepSpacing)}"`);
  }
  // beta_start / beta_end shape only the linear schedules: squaredcos_cap_v2 (and trained betas)
  // ignore them, and diffusers folders for those often carry beta_start 0
  if (cfg.trainedBetas == null && cfg.betaSchedule !== "squaredcos_cap_v2") {
    for (const key of ["betaStart", "betaEnd"] as const) {
      const v = cfg[key];
      if (!(typeof v === "number" && v > 0 && v < 1)) fail(where, key, `must be a number in (0, 1), got ${v}`);
    }
  }
  if (!Number.isInteger(cfg.stepsOffset) || cfg.stepsOffset < 0) {
    fail(where, "stepsOffset", `must be a non-negative integer, got ${cfg.stepsOffset}`);
  }
  if (!(cfg.clipSampleRange > 0)) fail(where, "clipSampleRange", `must be > 0, got ${cfg.clipSampleRange}`);
  if (cfg.trainedBetas != null) {
    if (cfg.trainedBetas.length !== T) {
      fail(where, "trainedBetas", `holds ${cfg.trainedBetas.length} values but numTrainTimesteps is ${T}`);
    }
    cfg.trainedBetas.forEach((b, i) => {
      if (!(b > 0 && b <= 1)) fail(where, "trainedBetas", `[${i}] = ${b} is outside (0, 1]`);
    });
  }
}

// ---- diffusers scheduler_config.json ---------------------------------------------------------

/** snake_case key in diffusers' scheduler_config.json → our field. */
const DIFFUSERS_KEYS = {
  num_train_timesteps: "numTrainTimesteps",
  beta_start: "betaStart",
  beta_end: "betaEnd",
  beta_schedule: "betaSchedule",
  trained_betas: "trainedBetas",
  rescale_betas_zero_snr: "rescaleZeroTerminalSnr",
  prediction_type: "predictionType",
  timestep_spacing: "timestepSpacing",
  steps_offset: "stepsOffset",
  clip_sample: "clipSample",
  clip_sample_range: "clipSampleRange",
  set_alpha_to_one: "setAlphaToOne",
} as const satisfies Record<string, keyof ScheduleConfig>;

/**
 * Reads a diffusers `scheduler/scheduler_config.json` (already parsed). Keys we do not use
 * (`_class_name`, `skip_prk_steps`, …) are ignored; a key we use with a wrong value is an error
 * naming the key and `source`. Missing keys take SD1.5's values.
 */
export function scheduleConfigFromDiffusers(json: unknown, source = "scheduler_config.json"): ScheduleConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new Error(`${source}: expected a JSON object of scheduler settings`);
  }
  const obj = json as Record<string, unknown>;
  const out: Partial<ScheduleConfig> = {};
  const num = (key: string, v: unknown): number => {
    if (typeof v !== "number" || !Number.isFinite(v)) fail(source, key, `must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const int = (key: string, v: unknown): number => {
    const n = num(key, v);
    if (!Number.isInteger(n)) fail(source, key, `must be an integer, got ${n}`);
    return n;
  };
  const bool = (key: string, v: unknown): boolean => {
    if (typeof v !== "boolean") fail(source, key, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const oneOf = <T extends string>(key: string, v: unknown, allowed: readonly T[]): T => {
    if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
      fail(source, key, `must be one of ${allowed.join(", ")}; got ${JSON.stringify(v)}`);
    }
    return v as T;
  };
  for (const [key, v] of Object.entries(obj)) {
    if (!(key in DIFFUSERS_KEYS)) continue;
    switch (key as keyof typeof DIFFUSERS_KEYS) {
      case "num_train_timesteps": out.numTrainTimesteps = int(key, v); break;
      case "beta_start": out.betaStart = num(key, v); break;
      case "beta_end": out.betaEnd = num(key, v); break;
      case "beta_schedule": out.betaSchedule = oneOf(key, v, BETA_SCHEDULES); break;
      case "trained_betas":
        if (v === null) break;
        if (!Array.isArray(v)) fail(source, key, "must be null or a list of numbers");
        out.trainedBetas = v.map((b, i) => num(`${key}[${i}]`, b));
        break;
      case "rescale_betas_zero_snr": out.rescaleZeroTerminalSnr = bool(key, v); break;
      case "prediction_type": out.predictionType = oneOf(key, v, PREDICTION_TYPES); break;
      case "timestep_spacing": out.timestepSpacing = oneOf(key, v, TIMESTEP_SPACINGS); break;
      case "steps_offset": out.stepsOffset = int(key, v); break;
      case "clip_sample": out.clipSample = bool(key, v); break;
      case "clip_sample_range": out.clipSampleRange = num(key, v); break;
      case "set_alpha_to_one": out.setAlphaToOne = bool(key, v); break;
    }
  }
  const cfg: ScheduleConfig = { ...SD15_SCHEDULE, ...out };
  validateScheduleConfig(cfg, source);
  return cfg;
}

/** The diffusers form (snake_case keys), for writing scheduler/scheduler_config.json. */
export function scheduleConfigToDiffusers(cfg: ScheduleConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [snake, camel] of Object.entries(DIFFUSERS_KEYS)) {
    const v = cfg[camel];
    if (v !== undefined) out[snake] = v;
  }
  if (out.trained_betas === undefined) out.trained_betas = null;
  return out;
}

// ---- β tables --------------------------------------------------------------------------------

/** β_t for t = 0 … T−1 (float64). */
export function makeBetas(cfg: Pick<ScheduleConfig, "numTrainTimesteps" | "betaStart" | "betaEnd" | "betaSchedule" | "trainedBetas">): Float64Array {
  const T = cfg.numTrainTimesteps;
  const betas = new Float64Array(T);
  if (cfg.trainedBetas != null) {
    betas.set(cfg.trainedBetas);
    return betas;
  }
  switch (cfg.betaSchedule) {
    case "linear":
      for (let i = 0; i < T; i++) betas[i] = cfg.betaStart + ((cfg.betaEnd - cfg.betaStart) * i) / (T - 1);
      break;
    case "scaled_linear": {
      // Stable Diffusion's: linear in √β.
      const a = Math.sqrt(cfg.betaStart);
      const b = Math.sqrt(cfg.betaEnd);
      for (let i = 0; i < T; i++) betas[i] = (a + ((b - a) * i) / (T - 1)) ** 2;
      break;
    }
    case "squaredcos_cap_v2": {
      // Nichol & Dhariwal's cosine schedule: ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), β capped at 0.999.
      const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
      for (let i = 0; i < T; i++) betas[i] = Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), 0.999);
      break;
    }
    default:
      throw new Error(`unknown beta schedule "${String(cfg.betaSchedule)}"; use one of ${BETA_SCHEDULES.join(", ")}`);
  }
  return betas;
}

/**
 * Lin et al. (2023), Algorithm 1: shift and scale √ᾱ so that √ᾱ_{T−1} = 0 while √ᾱ_0 is kept,
 * then recover β. The last β becomes 1 (pure noise at the final timestep).
 */
export function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const T = betas.length;
  const sqrtAbar = new Float64Array(T);
  let prod = 1;
  for (let i = 0; i < T; i++) {
    prod *= 1 - betas[i]!;
    sqrtAbar[i] = Math.sqrt(prod);
  }
  const first = sqrtAbar[0]!;
  const last = sqrtAbar[T - 1]!;
  const scale = first / (first - last);
  const out = new Float64Array(T);
  let prevAbar = 1;
  for (let i = 0; i < T; i++) {
    const abar = ((sqrtAbar[i]! - last) * scale) ** 2;
    out[i] = 1 - (i === 0 ? abar : abar / prevAbar);
    prevAbar = abar;
  }
  return out;
}

// ---- the schedule ----------------------------------------------------------------------------

/**
 * The discrete forward process of one model. Tables indexed by integer t ∈ {0 … T−1}:
 * `betas` β_t, `alphas` α_t = 1 − β_t, `alphasCumprod` ᾱ_t, and the two noising coefficients
 * `sqrtAlphasCumprod` √ᾱ_t and `sqrtOneMinusAlphasCumprod` √(1−ᾱ_t).
 */
export class NoiseSchedule {
  readonly config: Readonly<ScheduleConfig>;
  readonly numTrainTimesteps: number;
  readonly betas: Float64Array;
  readonly alphas: Float64Array;
  readonly alphasCumprod: Float64Array;
  readonly sqrtAlphasCumprod: Float64Array;
  readonly sqrtOneMinusAlphasCumprod: Float64Array;
  /** Device copies of the tables `gatherAt` indexes into, per table and device. */
  readonly #tables = new Map<Float64Array, Map<string, Tensor>>();

  constructor(config: Partial<ScheduleConfig> = {}) {
    this.config = Object.freeze(scheduleConfig(config));
    const T = this.config.numTrainTimesteps;
    this.numTrainTimesteps = T;
    let betas = makeBetas(this.config);
    if (this.config.rescaleZeroTerminalSnr) betas = rescaleZeroTerminalSnr(betas);
    this.betas = betas;
    this.alphas = betas.map((b) => 1 - b);
    this.alphasCumprod = new Float64Array(T);
    let prod = 1;
    for (let i = 0; i < T; i++) {
      prod *= this.alphas[i]!;
      this.alphasCumprod[i] = prod;
    }
    this.sqrtAlphasCumprod = this.alphasCumprod.map(Math.sqrt);
    this.sqrtOneMinusAlphasCumprod = this.alphasCumprod.map((a) => Math.sqrt(1 - a));
  }

  get predictionType(): PredictionType {
    return this.config.predictionType;
  }

  /** Throws unless t is an integer timestep of this schedule. */
  checkTimestep(t: number, what = "timestep"): void {
    if (!Number.isInteger(t) || t < 0 || t >= this.numTrainTimesteps) {
      throw new Error(`${what} ${t} is not an integer in [0, ${this.numTrainTimesteps - 1}]`);
    }
  }

  /** ᾱ_t. */
  alphaBar(t: number): number {
    this.checkTimestep(t);
    return this.alphasCumprod[t]!;
  }

  /** Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t). */
  snr(t: number): number {
    const a = this.alphaBar(t);
    return a / (1 - a);
  }

  /** k-diffusion's noise level σ_t = √((1 − ᾱ_t)/ᾱ_t) (x_t/√ᾱ_t = x_0 + σ_t·ε); ∞ where ᾱ_t = 0. */
  sigma(t: number): number {
    const a = this.alphaBar(t);
    return Math.sqrt((1 - a) / a);
  }

  /** σ_t for every t (float64). */
  sigmas(): Float64Array {
    return this.alphasCumprod.map((a) => Math.sqrt((1 - a) / a));
  }

  /**
   * A float64 table gathered at per-sample timesteps, as an f32 tensor shaped [N, 1, …, 1]
   * (`ndim` dims) that broadcasts against a batch. `t` is an integer tensor [N] or plain numbers.
   */
  gatherAt(table: Float64Array, t: Tensor | readonly number[], ndim = 4, device?: Device): Tensor {
    const rest = new Array<number>(Math.max(ndim - 1, 0)).fill(1);
    if (!(t instanceof Tensor)) {
      const ts = t;
      const vals = new Float32Array(ts.length);
      ts.forEach((v, i) => {
        this.checkTimestep(v);
        vals[i] = table[v]!;
      });
      return tensor(vals, [ts.length, ...rest], { device: device ?? "cpu" });
    }
    const idx = t;
    if (idx.ndim !== 1) throw new Error(`timesteps must be a 1-D tensor [N], got shape [${idx.shape.join(", ")}]`);
    const dev = device ?? idx.device;
    let perDevice = this.#tables.get(table);
    if (perDevice === undefined) {
      perDevice = new Map();
      this.#tables.set(table, perDevice);
    }
    let tab = perDevice.get(dev);
    if (tab === undefined) {
      tab = keep(tensor(new Float32Array(table), [table.length], { device: dev }));
      perDevice.set(dev, tab);
    }
    const ix = idx.dtype === "i64" ? idx : idx.to("i64");
    const picked = tab.indexSelect(0, ix);
    if (ix !== idx) ix.dispose();
    const out = picked.reshape([idx.shape[0]!, ...rest]);
    picked.dispose();
    return out;
  }

  /** √ᾱ_t and √(1−ᾱ_t) at per-sample timesteps, each [N, 1, 1, 1] (for `ndim` = 4). */
  noisingCoefficients(t: Tensor | readonly number[], ndim = 4, device?: Device): { alpha: Tensor; sigma: Tensor } {
    return {
      alpha: this.gatherAt(this.sqrtAlphasCumprod, t, ndim, device),
      sigma: this.gatherAt(this.sqrtOneMinusAlphasCumprod, t, ndim, device),
    };
  }

  /** Frees the cached device tables (the schedule stays usable). */
  dispose(): void {
    for (const perDevice of this.#tables.values()) for (const t of perDevice.values()) t.dispose();
    this.#tables.clear();
  }
}
