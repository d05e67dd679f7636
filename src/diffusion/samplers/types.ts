// The one sampler contract, shaped after diffusers' scheduler API (set_timesteps → timesteps,
// init_noise_sigma, scale_model_input, step, add_noise) so each sampler can be checked against its
// diffusers counterpart line by line, while one loop (`sample`) drives them all.
import type { Generator, Tensor } from "../../tensor/index.js";
import type { NoiseSchedule, TimestepSpacing } from "../schedule.js";

export type SamplerName = "ddpm" | "ddim" | "euler" | "euler_ancestral" | "dpmpp_2m";

/**
 * The network as a sampler sees it: input x (already scaled by `scaleModelInput`) and the
 * timestep value diffusers passes to the UNet (an integer, or a float for Euler with "linspace"
 * spacing); returns the raw prediction in the schedule's prediction type.
 */
export type DenoiseModel = (x: Tensor, t: number) => Tensor;

/** Draws fresh N(0, I) noise of the given shape (the ancestral samplers' per-step noise). */
export type NoiseSource = (shape: number[]) => Tensor;

export interface SamplerOptions {
  /** Overrides the schedule's timestepSpacing (and the sampler's default). */
  spacing?: TimestepSpacing;
  /** DDIM's η (0: deterministic DDIM; 1: DDPM-like variance). Only DDIM reads it. */
  eta?: number;
}

/** One run's state, the equivalent of a diffusers scheduler after set_timesteps(steps). */
export interface SamplerProcess {
  /** The timesteps handed to the model, high to low. */
  readonly timesteps: readonly number[];
  /** Standard deviation of the starting sample (1 for VP samplers; σ_max-based for Euler). */
  readonly initNoiseSigma: number;
  /** Whether `step` draws from its NoiseSource. */
  readonly stochastic: boolean;
  /** The model input at step `index` (Euler: x/√(σ²+1); identity elsewhere). */
  scaleModelInput(x: Tensor, index: number): Tensor;
  /** x0 noised to the level of step `index`, in this sampler's state space (img2img start). */
  addNoise(x0: Tensor, noise: Tensor, index: number): Tensor;
  /** The sample after step `index`, given the model's raw output at (x, timesteps[index]). */
  step(modelOutput: Tensor, index: number, x: Tensor, noise: NoiseSource): Tensor;
  /** Frees tensors the process keeps between steps (DPM-Solver's history). */
  dispose(): void;
}

export interface Sampler {
  readonly name: SamplerName;
  /** diffusers' default timestep_spacing for this scheduler class. */
  readonly defaultSpacing: TimestepSpacing;
  /** The timesteps an n-step run visits (diffusers' set_timesteps). */
  timesteps(schedule: NoiseSchedule, steps: number, opts?: SamplerOptions): number[];
  prepare(schedule: NoiseSchedule, steps: number, opts?: SamplerOptions): SamplerProcess;
}

/** Per-step progress, emitted after each step. `x` is valid only during the callback. */
export interface SamplerStepEvent {
  type: "step";
  sampler: SamplerName;
  /** 0-based index into the run's timesteps. */
  index: number;
  /** Steps done so far in this run (1-based), out of `total`. */
  done: number;
  total: number;
  t: number;
  x: Tensor;
}

/** Where ancestral noise comes from: one generator for the batch, or one per sample. */
export type NoiseGenerators = Generator | Generator[];
