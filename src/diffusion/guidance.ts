// Classifier-free guidance (Ho & Salimans 2022) with diffusers' conventions:
//   ε̂ = ε_uncond + w·(ε_cond − ε_uncond), w = 7.5 in SD1.5's pipeline,
// the conditional and unconditional passes batched into ONE model call with inputs ordered
// [uncond…, cond…] and the output split by chunk(2). Like diffusers, guidance is applied only for
// w > 1; for 0 ≤ w ≤ 1 the model runs once, on the condition alone.
// guidance_rescale φ (Lin et al. 2023, §3.4; diffusers' rescale_noise_cfg):
//   ε̂ ← φ·ε̂·std(ε_cond)/std(ε̂) + (1 − φ)·ε̂, std over all dims but the batch (unbiased).
import { cat, tidy, type Tensor } from "../tensor/index.js";
import type { DenoiseModel } from "./samplers/types.js";

/** The network with its condition: (x [N,…], t, cond [N,…]) → raw prediction [N,…]. */
export type ConditionalModel<C = Tensor> = (x: Tensor, t: number, cond: C) => Tensor;

export function checkGuidance(scale: number, rescale = 0): void {
  if (!(typeof scale === "number" && Number.isFinite(scale) && scale >= 0)) {
    throw new Error(`guidance scale must be a finite number ≥ 0 (SD1.5 uses 7.5; ≤ 1 disables guidance), got ${scale}`);
  }
  if (!(typeof rescale === "number" && rescale >= 0 && rescale <= 1)) {
    throw new Error(`guidance rescale must be in [0, 1] (0 = off; Lin et al. suggest 0.7), got ${rescale}`);
  }
}

/** diffusers' rescale_noise_cfg. */
export function rescaleNoiseCfg(guided: Tensor, condOut: Tensor, rescale: number): Tensor {
  return tidy(() => {
    const dims = Array.from({ length: guided.ndim - 1 }, (_, i) => i + 1);
    const stdCond = condOut.std(dims, true);
    const stdGuided = guided.std(dims, true);
    const rescaled = guided.mul(stdCond.div(stdGuided));
    return rescaled.mul(rescale).add(guided.mul(1 - rescale));
  });
}

/**
 * Wraps a conditional model into the sampler's `(x, t) => prediction`. `cond` and `uncond` are
 * tensors with the batch first (text embeddings [N, L, D]); an `uncond` of batch 1 (the empty
 * prompt's embedding) is broadcast to the batch.
 */
export function classifierFreeGuidance(
  model: ConditionalModel,
  cond: Tensor,
  uncond: Tensor,
  scale: number,
  rescale = 0,
): DenoiseModel {
  checkGuidance(scale, rescale);
  const n = cond.shape[0]!;
  const sameTail = uncond.ndim === cond.ndim && uncond.shape.slice(1).every((d, i) => d === cond.shape[i + 1]);
  if (!sameTail || (uncond.shape[0] !== n && uncond.shape[0] !== 1)) {
    throw new Error(
      `classifierFreeGuidance: uncond [${uncond.shape.join(", ")}] must match cond [${cond.shape.join(", ")}] (or have batch 1)`,
    );
  }
  if (scale <= 1) return (x, t) => model(x, t, cond);
  return (x, t) =>
    tidy(() => {
      if (x.shape[0] !== n) {
        throw new Error(`classifierFreeGuidance: x has batch ${x.shape[0]} but the condition has ${n}`);
      }
      const u = uncond.shape[0] === n ? uncond : uncond.expand(cond.shape);
      const out = model(cat([x, x], 0), t, cat([u, cond], 0));
      const [outUncond, outCond] = out.chunk(2, 0) as [Tensor, Tensor];
      const guided = outUncond.add(outCond.sub(outUncond).mul(scale));
      return rescale > 0 ? rescaleNoiseCfg(guided, outCond, rescale) : guided;
    });
}
