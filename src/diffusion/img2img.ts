// Image-to-image (SDEdit, Meng et al. 2022; the paper's editing experiment uses strength 0.6):
// noise the clean input to the first kept timestep of an n-step run and denoise from there.
// The kept steps are diffusers' get_timesteps: the last ⌊n·strength⌋ of the n-step list. The
// noise is the seed's starting noise, so an edit is as reproducible as a sample. Strength 0
// returns the input unchanged; strength 1 starts from the input noised to the first timestep.
import type { Tensor } from "../tensor/index.js";
import { sample, type SampleOptions } from "./sample.js";

export { img2imgStart } from "./samplers/timesteps.js";

export interface Img2ImgOptions extends Omit<SampleOptions, "init"> {
  /** The clean input (latents) [N, C, H, W]. */
  x0: Tensor;
  /** Fraction of the chain to run, in [0, 1]. */
  strength: number;
}

export function img2img(opts: Img2ImgOptions): Tensor {
  const { x0, strength, ...rest } = opts;
  return sample({ ...rest, init: { x0, strength } });
}
