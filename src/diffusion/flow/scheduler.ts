// diffusers' FlowMatchEulerDiscreteScheduler (v0.30), the sampler of SD3 and Flux, computed in the
// same precisions so sigmas and timesteps match digit for digit:
//
//   training table: t_i = linspace(1, T, T)[::-1] (float32), σ_i = t_i / T, then (unless dynamic
//   shifting) σ ← shift·σ / (1 + (shift − 1)·σ) in float32;  timesteps = σ·T
//   set_timesteps(n): t = linspace(σ_max·T, σ_min·T, n) in float64, σ = t / T (or the caller's σ),
//   then shift again (static) or σ ← e^μ / (e^μ + (1/σ − 1)) (dynamic, Flux: μ from the image
//   token count); σ → float32, timesteps = σ·T (float32), and a final σ = 0 appended
//   step: x ← x + (σ_{i+1} − σ_i)·v   (v = the model's velocity, ε − x0)
import { z } from "zod";
import { tidy, type Tensor } from "../../tensor/index.js";
import { parseConfig } from "../../util/config-json.js";

export interface FlowMatchSchedulerConfig {
  numTrainTimesteps: number;
  shift: number;
  useDynamicShifting: boolean;
  baseShift: number;
  maxShift: number;
  baseImageSeqLen: number;
  maxImageSeqLen: number;
}

const flowJson = z.looseObject({
  _class_name: z.string().optional(),
  num_train_timesteps: z.number().int().positive().default(1000),
  shift: z.number().positive().default(1.0),
  use_dynamic_shifting: z.boolean().default(false),
  base_shift: z.number().default(0.5),
  max_shift: z.number().default(1.15),
  base_image_seq_len: z.number().int().positive().default(256),
  max_image_seq_len: z.number().int().positive().default(4096),
});

/** Reads scheduler/scheduler_config.json of an SD3 / Flux folder. */
export function flowMatchConfigFromJson(json: unknown, source = "scheduler/scheduler_config.json"): FlowMatchSchedulerConfig {
  const j = parseConfig(flowJson, json, source, "FlowMatchEulerDiscreteScheduler config");
  if (j._class_name !== undefined && j._class_name !== "FlowMatchEulerDiscreteScheduler") {
    throw new Error(`${source}: _class_name "${j._class_name}" is not FlowMatchEulerDiscreteScheduler (the only flow-matching scheduler supported)`);
  }
  if (j.max_image_seq_len === j.base_image_seq_len && j.use_dynamic_shifting) {
    throw new Error(`${source}: base_image_seq_len and max_image_seq_len must differ for dynamic shifting`);
  }
  return {
    numTrainTimesteps: j.num_train_timesteps, shift: j.shift, useDynamicShifting: j.use_dynamic_shifting,
    baseShift: j.base_shift, maxShift: j.max_shift, baseImageSeqLen: j.base_image_seq_len, maxImageSeqLen: j.max_image_seq_len,
  };
}

export function flowMatchConfigToJson(c: FlowMatchSchedulerConfig): Record<string, unknown> {
  return {
    _class_name: "FlowMatchEulerDiscreteScheduler", _diffusers_version: "0.30.0",
    base_image_seq_len: c.baseImageSeqLen, base_shift: c.baseShift, max_image_seq_len: c.maxImageSeqLen,
    max_shift: c.maxShift, num_train_timesteps: c.numTrainTimesteps, shift: c.shift, use_dynamic_shifting: c.useDynamicShifting,
  };
}

const f32 = Math.fround;

/** SD3's shift in float32 tensor arithmetic: shift·σ / (1 + (shift − 1)·σ). */
function shiftF32(s: number, shift: number): number {
  return f32(f32(shift * s) / f32(1 + f32((shift - 1) * s)));
}

/** The 1000-entry training table: σ per training index (index 0 = σ_max), and timesteps σ·T. */
export function flowTrainingSigmas(c: FlowMatchSchedulerConfig): { sigmas: Float32Array; timesteps: Float32Array } {
  const T = c.numTrainTimesteps;
  const sigmas = new Float32Array(T), timesteps = new Float32Array(T);
  for (let i = 0; i < T; i++) {
    // np.linspace(1, T, T, dtype=float32)[::-1]: the float64 value rounded
    const t = f32(T === 1 ? 1 : 1 + ((T - 1) * (T - 1 - i)) / (T - 1));
    let s = f32(t / T);
    if (!c.useDynamicShifting) s = shiftF32(s, c.shift);
    sigmas[i] = s;
    timesteps[i] = f32(s * T);
  }
  return { sigmas, timesteps };
}

/** FluxPipeline's calculate_shift: μ linear in the image token count between the config's two points. */
export function calculateShift(imageSeqLen: number, c: FlowMatchSchedulerConfig): number {
  const m = (c.maxShift - c.baseShift) / (c.maxImageSeqLen - c.baseImageSeqLen);
  const b = c.baseShift - m * c.baseImageSeqLen;
  return imageSeqLen * m + b;
}

/** e^μ / (e^μ + (1/σ − 1)^power): the dynamic (resolution-dependent) time shift. */
export function timeShift(mu: number, power: number, sigma: number): number {
  return Math.exp(mu) / (Math.exp(mu) + (1 / sigma - 1) ** power);
}

export interface FlowSchedule {
  /** [n] σ·T (what SD3's transformer receives; Flux's receives it / 1000). */
  timesteps: Float32Array;
  /** [n + 1] σ per step, then 0. */
  sigmas: Float32Array;
}

export interface SetTimestepsOptions {
  /** Required with dynamic shifting (Flux): calculateShift(image tokens). */
  mu?: number;
  /** Explicit σ before shifting (FluxPipeline passes linspace(1, 1/n, n)). */
  sigmas?: readonly number[];
}

/** set_timesteps(n) of FlowMatchEulerDiscreteScheduler. */
export function flowSetTimesteps(c: FlowMatchSchedulerConfig, steps: number, opts: SetTimestepsOptions = {}): FlowSchedule {
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`flow scheduler: the number of steps must be a positive integer, got ${steps}`);
  if (c.useDynamicShifting && opts.mu === undefined) {
    throw new Error("flow scheduler: use_dynamic_shifting is on (a Flux scheduler): pass mu = calculateShift(image tokens)");
  }
  const T = c.numTrainTimesteps;
  let base: number[];
  if (opts.sigmas) {
    if (opts.sigmas.length !== steps) throw new Error(`flow scheduler: ${opts.sigmas.length} sigmas given for ${steps} steps`);
    base = [...opts.sigmas];
  } else {
    const table = flowTrainingSigmas(c).sigmas;
    const hi = table[0]! * T, lo = table[T - 1]! * T;
    base = linspace64(hi, lo, steps).map((t) => t / T);
  }
  const shifted = base.map((s) => (c.useDynamicShifting ? timeShift(opts.mu!, 1, s) : (c.shift * s) / (1 + (c.shift - 1) * s)));
  const sigmas = new Float32Array(steps + 1);
  const timesteps = new Float32Array(steps);
  shifted.forEach((s, i) => { sigmas[i] = s; timesteps[i] = f32(f32(s) * T); });
  return { sigmas, timesteps };
}

/** numpy's linspace(start, stop, n) in float64: i·((stop − start)/(n − 1)) + start, the last value exactly stop. */
export function linspace64(start: number, stop: number, n: number): number[] {
  if (n === 1) return [start];
  const step = (stop - start) / (n - 1);
  return Array.from({ length: n }, (_, i) => (i === n - 1 ? stop : i * step + start));
}

/** One Euler step x + (σ_{i+1} − σ_i)·v (dt rounded to float32 as the scheduler's tensors are). */
export function flowEulerStep(sample: Tensor, velocity: Tensor, schedule: FlowSchedule, i: number): Tensor {
  const dt = f32(schedule.sigmas[i + 1]! - schedule.sigmas[i]!);
  return tidy(() => (sample.dtype === "f32" ? sample : sample.to("f32")).add(velocity.mul(dt)));
}
