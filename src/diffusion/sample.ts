// The one sampling loop every sampler runs through (diffusers' pipeline denoising loop):
//   x = noise·init_noise_sigma (or, for img2img, the input noised to the first kept step)
//   for each timestep: x = step(model(scale_model_input(x), t), x)
// Each step runs in its own tidy() scope, so memory stays flat whatever the step count.
import { cat, noGrad, randn, tidy, type Generator, type Tensor } from "../tensor/index.js";
import type { NoiseSchedule } from "./schedule.js";
import { getSampler } from "./samplers/registry.js";
import { img2imgStart } from "./samplers/timesteps.js";
import type {
  DenoiseModel,
  NoiseGenerators,
  NoiseSource,
  Sampler,
  SamplerName,
  SamplerOptions,
  SamplerProcess,
  SamplerStepEvent,
} from "./samplers/types.js";

export interface SampleOptions extends SamplerOptions {
  /** A sampler or its registry name. */
  sampler: Sampler | SamplerName;
  model: DenoiseModel;
  schedule: NoiseSchedule;
  steps: number;
  /** Unit-variance starting noise [N, …] (see `initialNoise`); scaled by the sampler's initNoiseSigma. */
  noise: Tensor;
  /**
   * Source of the per-step noise of ancestral samplers (DDPM, Euler ancestral, DDIM with η > 0):
   * one generator per sample (batch-independent, what `seededGenerators` gives) or one for the
   * batch. Required by those samplers only.
   */
  gen?: NoiseGenerators;
  /** Image-to-image (SDEdit): the clean input (latents) and how much of the chain to run. */
  init?: { x0: Tensor; strength: number };
  onStep?: (event: SamplerStepEvent) => void;
}

/** Noise of `shape` from `gen`: per sample (row i from gen[i]) for a list, else one draw. */
export function noiseSource(gen: NoiseGenerators | undefined, device: string, what: string): NoiseSource {
  return (shape: number[]) => {
    if (gen === undefined) {
      throw new Error(
        `${what} draws fresh noise at each step: pass \`gen\` (one Generator per sample, e.g. seededGenerators(seeds), or one Generator)`,
      );
    }
    if (!Array.isArray(gen)) return randn(shape, gen as Generator, { device });
    const n = shape[0]!;
    if (gen.length !== n) {
      throw new Error(`${what}: gen holds ${gen.length} generators but the batch has ${n} samples; pass one per sample`);
    }
    const rest = [1, ...shape.slice(1)];
    return tidy(() => cat(gen.map((g) => randn(rest, g, { device })), 0));
  };
}

/** Runs a sampler to the end and returns the final sample (x0 estimate in the model's space). */
export function sample(opts: SampleOptions): Tensor {
  const sampler = typeof opts.sampler === "string" ? getSampler(opts.sampler) : opts.sampler;
  const proc = sampler.prepare(opts.schedule, opts.steps, { spacing: opts.spacing, eta: opts.eta });
  try {
    return noGrad(() => runProcess(sampler.name, proc, opts));
  } finally {
    proc.dispose();
  }
}

function runProcess(name: SamplerName, proc: SamplerProcess, opts: SampleOptions): Tensor {
  const { model, noise, onStep } = opts;
  if (proc.stochastic && opts.gen === undefined) {
    throw new Error(
      `sampler ${name} draws fresh noise at each step: pass \`gen\` (one Generator per sample, e.g. seededGenerators(seeds), or one Generator)`,
    );
  }
  const draw = noiseSource(opts.gen, noise.device, `sampler ${name}`);
  const n = proc.timesteps.length;
  let startIndex = 0;
  let x: Tensor;
  if (opts.init !== undefined) {
    const { x0, strength } = opts.init;
    const shapeOk = x0.shape.length === noise.shape.length && x0.shape.every((d, i) => d === noise.shape[i]);
    if (!shapeOk) {
      throw new Error(`img2img: init x0 [${x0.shape.join(", ")}] and noise [${noise.shape.join(", ")}] must have the same shape`);
    }
    const start = img2imgStart(n, strength);
    if (start.runSteps === 0) return x0.clone(); // strength 0 (or too small for one step): the input
    startIndex = start.startIndex;
    x = proc.addNoise(x0, noise, startIndex);
  } else {
    x = proc.initNoiseSigma === 1 ? noise.clone() : noise.mul(proc.initNoiseSigma);
  }
  for (let i = startIndex; i < n; i++) {
    const t = proc.timesteps[i]!;
    const next = tidy(() => {
      const input = proc.scaleModelInput(x, i);
      const out = model(input, t);
      if (out.shape.length !== x.shape.length || out.shape.some((d, k) => d !== x.shape[k])) {
        throw new Error(`the model returned shape [${out.shape.join(", ")}] for input [${x.shape.join(", ")}]; they must match`);
      }
      return proc.step(out, i, x, draw);
    });
    x.dispose();
    x = next;
    onStep?.({ type: "step", sampler: name, index: i, done: i - startIndex + 1, total: n - startIndex, t, x });
  }
  return x;
}
