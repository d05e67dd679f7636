// Seeds: a sample is a function of (model, prompt, seed, sampler, steps, guidance) alone.
//
// Scheme (the same as diffusers given `generator=[torch.Generator().manual_seed(s) for s in seeds]`):
// sample i owns the generator `new Generator(seeds[i])`. From it, in this order, come
//   1. its starting noise, one randn of shape [C, H, W] (`initialNoise`), then
//   2. the per-step noise of ancestral samplers, one randn of [C, H, W] per step that draws.
// Nothing else touches that generator, so a sample does not depend on the batch size, its
// position in the batch or the other prompts; and because our Generator reproduces
// torch.Generator's CPU stream bit for bit, the same seed gives PyTorch's noise.
import { cat, Generator, randn, tidy, type Tensor } from "../tensor/index.js";

function checkSeeds(seeds: readonly number[]): void {
  if (seeds.length === 0) throw new Error("seeds: need at least one seed");
  seeds.forEach((s, i) => {
    if (!Number.isSafeInteger(s) || s < 0) throw new Error(`seeds[${i}] = ${s} is not a non-negative integer`);
  });
}

/** One generator per sample, each seeded with its own seed. */
export function seededGenerators(seeds: readonly number[]): Generator[] {
  checkSeeds(seeds);
  return seeds.map((s) => new Generator(s));
}

/**
 * Starting noise [N, C, H, W]: row i is the first randn([C, H, W]) of `gens[i]` (pass the
 * generators the sampler will go on drawing from, or seeds to make fresh ones).
 */
export function initialNoise(
  seedsOrGens: readonly number[] | readonly Generator[],
  shape: readonly number[],
  opts: { device?: string } = {},
): Tensor {
  const gens = seedsOrGens.length > 0 && seedsOrGens[0] instanceof Generator
    ? (seedsOrGens as readonly Generator[])
    : seededGenerators(seedsOrGens as readonly number[]);
  shape.forEach((d) => {
    if (!Number.isInteger(d) || d < 1) throw new Error(`initialNoise: shape [${shape.join(", ")}] must hold positive integers`);
  });
  const device = opts.device ?? "cpu";
  return tidy(() => cat(gens.map((g) => randn([1, ...shape], g, { device })), 0));
}

/** The generators and starting noise for a batch of seeds, ready for `sample`. */
export function seededInputs(
  seeds: readonly number[],
  shape: readonly number[],
  opts: { device?: string } = {},
): { gen: Generator[]; noise: Tensor } {
  const gen = seededGenerators(seeds);
  return { gen, noise: initialNoise(gen, shape, opts) };
}
