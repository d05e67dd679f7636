// Implicit-reward accuracy on held-out preference pairs — the paper's Table 2 protocol
// (Wallace et al. 2023, §6: "average of inside over 10 random timesteps"):
//
//   for each pair (x_chosen, x_rejected, c), for k = 1 … K:
//     draw t_k ~ U{0 … T−1} and ε_k ~ N(0, I), shared by the chosen and the rejected image;
//     inside_k = −(β/2)·((L_chosen − L_rejected) − (R_chosen − R_rejected))
//       with L = the model's per-sample denoising error, R = the reference's (src/losses/preference);
//   the pair is predicted right when mean_k inside_k > 0, a tie (½) when it is exactly 0.
//   accuracy = (right + ½·ties) / pairs.
//
// β only scales inside (the sign, hence the accuracy, does not depend on it); it is reported so
// the mean inside is on the training loss's scale. Model = reference gives inside = 0 for every
// pair, so accuracy ½ exactly. Randomness comes from one seeded generator: per batch and draw, the
// noise [N, C, H, W] first, then the timesteps [N] (dpoStep's order).
// Flow-matching models (SD3 / Flux) pass their training `noising` instead of a schedule: t = σ·T
// drawn from its density, x_t = (1 − σ)·x0 + σ·ε, target ε − x0, σ and ε shared within a pair.
import { Generator, cat, noGrad, randint, randn, tensor, tidy, type Tensor } from "../tensor/index.js";
import type { NoiseSchedule, PredictionType } from "../diffusion/index.js";
import type { TrainingNoising } from "../diffusion/flow/training.js";
import { DEFAULT_BETA, insideOf, perSampleErrors } from "../losses/preference.js";
import { noisedPairs, type DenoisingModel, type PairBatch } from "../train/dpo-step.js";
import { wilsonInterval } from "./stats.js";

export interface ImplicitAccuracyOptions {
  /** The tuned model (or any model under test). */
  policy: DenoisingModel;
  /** The reference (the base model). */
  reference: DenoisingModel;
  /** Frozen text encoder: prompts → conditioning [N, L, D]. */
  encodePrompts: (prompts: string[]) => Tensor;
  /** Pixels [2N, 3, H, W] in [−1, 1] → the UNet's input space (the VAE's scaled latents); identity when absent. */
  encodeImages?: (pixels: Tensor) => Tensor;
  /** The DDPM schedule (UNet models); give this or `noising`. */
  schedule?: NoiseSchedule;
  /** A family's training noising instead of the schedule (flow matching: src/diffusion/flow/training). */
  noising?: TrainingNoising;
  /** Default: the schedule's prediction type. */
  predictionType?: PredictionType;
  /** Timestep draws per pair (default 10, the paper's). */
  draws?: number;
  /** β of the official convention, only for the reported inside values (default 5000). */
  beta?: number;
  seed?: number;
  onEvent?: (e: ImplicitAccuracyEvent) => void;
}

export type ImplicitAccuracyEvent = { type: "implicit-batch"; pairsDone: number; accuracySoFar: number };

export interface ImplicitAccuracyResult {
  /** (right + ½·ties) / pairs. */
  accuracy: number;
  /** Wilson 95% interval of right / (pairs − ties). */
  interval: [number, number];
  intervalMethod: "wilson";
  pairs: number;
  right: number;
  ties: number;
  draws: number;
  beta: number;
  /** Mean over pairs of the K-averaged inside. */
  meanInside: number;
  /** The K-averaged inside of each pair, in input order. */
  insides: number[];
}

/** Implicit-reward accuracy over batches of pairs laid out [chosen…, rejected…] (the trainer's PairBatch). */
export async function implicitRewardAccuracy(
  batches: AsyncIterable<PairBatch> | Iterable<PairBatch>,
  opts: ImplicitAccuracyOptions,
): Promise<ImplicitAccuracyResult> {
  const draws = opts.draws ?? 10;
  if (!Number.isInteger(draws) || draws < 1) throw new Error(`implicit accuracy: draws (timesteps per pair) must be a positive integer, got ${draws}`);
  const beta = opts.beta ?? DEFAULT_BETA;
  const { schedule, noising } = opts;
  if ((schedule === undefined) === (noising === undefined)) throw new Error("implicit accuracy: give exactly one of schedule (DDPM) or noising (a flow-matching process)");
  const predictionType = opts.predictionType ?? schedule?.predictionType ?? "epsilon";
  const T = schedule?.numTrainTimesteps ?? noising!.numTrainTimesteps;
  const gen = new Generator(opts.seed ?? 0);
  const insides: number[] = [];
  let right = 0;
  let ties = 0;
  for await (const batch of batches) {
    const n = batch.prompts.length;
    if (batch.pixels.ndim !== 4 || batch.pixels.shape[0] !== 2 * n) {
      throw new Error(`implicit accuracy: a batch of ${n} prompts needs images [${2 * n}, C, H, W] laid out [chosen…, rejected…]; got [${batch.pixels.shape.join(", ")}]`);
    }
    const mean = tidy(() => noGrad(() => {
      const device = batch.pixels.device;
      const x0 = opts.encodeImages ? opts.encodeImages(batch.pixels) : batch.pixels;
      const [, c, h, w] = x0.shape as [number, number, number, number];
      const condPairs = opts.encodePrompts(batch.prompts);
      const cond = cat([condPairs, condPairs], 0);
      let sum = tensor(new Float32Array(n), [n], { device });
      for (let k = 0; k < draws; k++) {
        // one scope per draw: both UNet passes' tensors are freed before the next draw
        const previous = sum;
        sum = tidy(() => {
          const noisePairs = randn([n, c, h, w], gen, { device });
          const tPairs = noising !== undefined ? noising.drawTimesteps(n, gen) : Array.from(randint(0, T, [n], gen).toArray(), (v) => Math.round(v));
          const { noisy, target, tTensor } = noisedPairs(x0, noisePairs, tPairs, noising ?? { schedule: schedule!, predictionType });
          const p = perSampleErrors(opts.policy(noisy, tTensor, cond), target);
          const r = perSampleErrors(opts.reference(noisy, tTensor, cond), target);
          const inside = insideOf(p, { rw: r.lw, rl: r.ll }, beta);
          return previous.add(inside.to("f32"));
        });
        previous.dispose();
      }
      return sum.div(draws).toArray();
    }));
    for (const v of mean) {
      insides.push(v);
      if (v > 0) right++;
      else if (v === 0) ties++;
    }
    opts.onEvent?.({ type: "implicit-batch", pairsDone: insides.length, accuracySoFar: (right + 0.5 * ties) / insides.length });
  }
  const pairs = insides.length;
  if (pairs === 0) throw new Error("implicit accuracy: no preference pairs were read (is the data set empty, or were all rows ties or filtered?)");
  return {
    accuracy: (right + 0.5 * ties) / pairs,
    interval: wilsonInterval(right, pairs - ties),
    intervalMethod: "wilson",
    pairs, right, ties, draws, beta,
    meanInside: insides.reduce((a, b) => a + b, 0) / pairs,
    insides,
  };
}
