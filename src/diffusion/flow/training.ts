// Flow-matching training arithmetic as diffusers' train_dreambooth_sd3.py / train_dreambooth_flux.py
// (v0.30) do it, and the noising process the Diffusion-DPO step uses for flow models (Flow-DPO):
//
//   u ~ density (logit-normal σ(N(m, s²)), "mode" 1 − u − k·(cos²(πu/2) − 1 + u), or uniform)
//   index = ⌊u·T⌋ into the scheduler's training table → σ (the table carries the shift) and t = σ·T
//   x_t = (1 − σ)·x0 + σ·ε,  target v = ε − x0   (or, "preconditioned", pred·(−σ) + x_t vs x0)
//   loss = mean over the batch of mean((w(σ)·(pred − target)²)), w = 1, σ⁻² (sigma_sqrt) or
//   2 / (π(1 − 2σ + 2σ²)) (cosmap)
//
// For DPO the chosen and rejected image of a pair share u (hence σ, t) and ε (dpo-step.ts draws ε
// per pair and calls drawTimesteps once per pair).
import { Generator, rand, randn, tensor, tidy, type Tensor } from "../../tensor/index.js";
import { flowTrainingSigmas, type FlowMatchSchedulerConfig } from "./scheduler.js";

export type FlowWeightingScheme = "logit_normal" | "mode" | "uniform" | "sigma_sqrt" | "cosmap" | "none";
export const FLOW_WEIGHTING_SCHEMES: readonly FlowWeightingScheme[] = ["logit_normal", "mode", "uniform", "sigma_sqrt", "cosmap", "none"];

export interface FlowDensityOptions {
  /** diffusers' --weighting_scheme (default logit_normal, the SD3 paper's choice). */
  scheme?: FlowWeightingScheme;
  logitMean?: number;
  logitStd?: number;
  /** "mode" only (default 1.29, the SD3 paper's). */
  modeScale?: number;
}

/** compute_density_for_timestep_sampling: n values u ∈ [0, 1) drawn from `gen`. */
export function sampleFlowDensity(n: number, gen: Generator, opts: FlowDensityOptions = {}): number[] {
  const scheme = opts.scheme ?? "logit_normal";
  return tidy(() => {
    if (scheme === "logit_normal") {
      return randn([n], gen).mul(opts.logitStd ?? 1).add(opts.logitMean ?? 0).sigmoid().toArray();
    }
    const u = rand([n], gen);
    if (scheme === "mode") {
      const k = opts.modeScale ?? 1.29;
      return u.rsub(1).sub(u.mul(Math.PI / 2).cos().square().sub(1).add(u).mul(k)).toArray();
    }
    return u.toArray();
  });
}

/** The training-table positions for densities u: index ⌊u·T⌋ (clamped into the table), σ and t = σ·T. */
export function flowTimestepsFromDensity(u: readonly number[], config: FlowMatchSchedulerConfig): { indices: number[]; sigmas: number[]; timesteps: number[] } {
  const table = flowTrainingSigmas(config);
  const T = config.numTrainTimesteps;
  const indices = u.map((x) => Math.min(T - 1, Math.max(0, Math.floor(Math.fround(x * T)))));
  return { indices, sigmas: indices.map((i) => table.sigmas[i]!), timesteps: indices.map((i) => table.timesteps[i]!) };
}

function sigmaColumn(sigmas: readonly number[] | Tensor, like: Tensor): Tensor {
  const shape = [like.shape[0]!, ...new Array<number>(like.ndim - 1).fill(1)];
  if (!Array.isArray(sigmas)) return (sigmas as Tensor).reshape(shape).to(like.dtype);
  const values = sigmas as readonly number[];
  if (values.length !== like.shape[0]) throw new Error(`flow noising: ${values.length} sigmas for a batch of ${like.shape[0]}`);
  return tensor(Float32Array.from(values), shape, { device: like.device }).to(like.dtype);
}

/** x_t = (1 − σ)·x0 + σ·ε with σ per sample. */
export function flowNoisy(x0: Tensor, noise: Tensor, sigmas: readonly number[] | Tensor): Tensor {
  return tidy(() => {
    const s = sigmaColumn(sigmas, x0);
    return s.rsub(1).mul(x0).add(s.mul(noise));
  });
}

/** The velocity target ε − x0. */
export function flowTarget(x0: Tensor, noise: Tensor): Tensor {
  return noise.sub(x0);
}

/** --precondition_outputs: the prediction mapped to x0 space, pred·(−σ) + x_t. */
export function preconditionFlowPrediction(pred: Tensor, noisy: Tensor, sigmas: readonly number[] | Tensor): Tensor {
  return tidy(() => pred.mul(sigmaColumn(sigmas, pred).neg()).add(noisy));
}

/** compute_loss_weighting_for_sd3 per sample. */
export function flowLossWeighting(scheme: FlowWeightingScheme, sigmas: readonly number[]): number[] {
  const f = Math.fround;
  if (scheme === "sigma_sqrt") return sigmas.map((s) => f(s ** -2));
  if (scheme === "cosmap") return sigmas.map((s) => f(2 / (Math.PI * f(f(1 - f(2 * s)) + f(2 * f(s * s))))));
  return sigmas.map(() => 1);
}

/** The script's loss: mean over samples of mean(w·(pred − target)²). */
export function flowMatchingLoss(pred: Tensor, target: Tensor, weighting: readonly number[]): Tensor {
  return tidy(() => {
    const n = pred.shape[0]!;
    const sq = pred.float().sub(target.float()).square();
    const w = tensor(Float32Array.from(weighting), [n, ...new Array<number>(pred.ndim - 1).fill(1)], { device: pred.device });
    return sq.mul(w).reshape([n, -1]).mean(1).mean();
  });
}

/**
 * How a preference step noises for a model family. dpo-step.ts draws ε per pair itself, then asks
 * for one timestep per pair (shared by both images) and the noisy input, target and model timesteps.
 */
export interface TrainingNoising {
  /** T, for MaPO's log-odds scale and reporting. */
  numTrainTimesteps: number;
  /** One value per pair, drawn from `gen` (the step's generator, right after ε). */
  drawTimesteps(count: number, gen: Generator): number[];
  noise(x0: Tensor, eps: Tensor, t: readonly number[]): Tensor;
  target(x0: Tensor, eps: Tensor, t: readonly number[]): Tensor;
  /** What the network receives as its timestep argument. */
  modelTimesteps(t: readonly number[], device: string): Tensor;
}

/**
 * Flow matching for the DPO step: t = σ·T from the density over the scheduler's training table
 * (SD3: shift 3 in the table; Flux: the unshifted table, as train_dreambooth_flux), x_t and ε − x0.
 * The model gets t as float32 [2N] (SD3's convention; the Flux denoiser divides by 1000 itself).
 */
export function flowMatchingNoising(config: FlowMatchSchedulerConfig, density: FlowDensityOptions = {}): TrainingNoising {
  const T = config.numTrainTimesteps;
  // get_sigmas: the table's σ at the position holding t (t/T for a value not in the table)
  const table = flowTrainingSigmas(config);
  const sigmaOf = new Map<number, number>();
  table.timesteps.forEach((t, i) => { if (!sigmaOf.has(t)) sigmaOf.set(t, table.sigmas[i]!); });
  return {
    numTrainTimesteps: T,
    drawTimesteps: (count, gen) => flowTimestepsFromDensity(sampleFlowDensity(count, gen, density), config).timesteps,
    noise: (x0, eps, t) => flowNoisy(x0, eps, t.map((v) => sigmaOf.get(v) ?? Math.fround(v / T))),
    target: (x0, eps) => flowTarget(x0, eps),
    modelTimesteps: (t, device) => tensor(Float32Array.from(t), [t.length], { device }),
  };
}
