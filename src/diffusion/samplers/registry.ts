// Samplers by name, so a config can name one.
import { ddim } from "./ddim.js";
import { ddpm } from "./ddpm.js";
import { dpmpp2m } from "./dpmpp2m.js";
import { euler } from "./euler.js";
import { eulerAncestral } from "./eulerAncestral.js";
import type { Sampler, SamplerName } from "./types.js";

export const samplers = {
  ddpm,
  ddim,
  euler,
  euler_ancestral: eulerAncestral,
  dpmpp_2m: dpmpp2m,
} as const satisfies Record<SamplerName, Sampler>;

export const SAMPLER_NAMES = Object.keys(samplers) as SamplerName[];

export function isSamplerName(name: string): name is SamplerName {
  return Object.hasOwn(samplers, name);
}

/** The sampler registered under `name`; an unknown name is an error listing the valid ones. */
export function getSampler(name: string): Sampler {
  if (!isSamplerName(name)) {
    throw new Error(`unknown sampler "${name}"; choose one of ${SAMPLER_NAMES.join(", ")}`);
  }
  return samplers[name];
}

/** The sampler that runs what each diffusers scheduler class does. */
export const SCHEDULER_CLASS_SAMPLERS: Readonly<Record<string, SamplerName>> = {
  DDIMScheduler: "ddim",
  DDPMScheduler: "ddpm",
  EulerDiscreteScheduler: "euler",
  EulerAncestralDiscreteScheduler: "euler_ancestral",
  DPMSolverMultistepScheduler: "dpmpp_2m",
};

/**
 * The default sampler for a model folder: the one its scheduler class names (as diffusers picks the
 * scheduler saved with the pipeline). Classes without a sampler here (PNDMScheduler — SD1.5's
 * original —, LMSDiscreteScheduler, UniPC, Heun, …) fall back to DDIM; loadModelFolder warns.
 */
export function samplerForScheduler(schedulerClass: string | undefined): SamplerName {
  return (schedulerClass !== undefined ? SCHEDULER_CLASS_SAMPLERS[schedulerClass] : undefined) ?? "ddim";
}
