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
