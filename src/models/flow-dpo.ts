// SD3 / Flux transformers as the DPO trainer's denoiser (Flow-DPO), without the trainer knowing
// the family:
//
//   * conditioning travels as ONE tensor, as the trainer passes it: the text sequence [N, L, D]
//     with the pooled vector (zero-padded to D) appended as token L — packFlowConditioning;
//     the denoiser splits it again (pooled ≤ D holds for SD3 (2048 ≤ 4096) and Flux (768 ≤ 4096));
//   * the step's noising is src/diffusion/flow's flowMatchingNoising (t = σ·1000, ε − x0 target);
//   * latents stay [N, C, H, W]; the Flux denoiser packs them 2×2, builds the image ids, gives the
//     transformer t / 1000 and its guidance value, and unpacks the velocity;
//   * the wrapper's child is named "transformer", so LoRA paths read as diffusers' SD3 / Flux LoRA
//     files name them: `transformer.transformer_blocks.0.attn.to_q.lora_A.weight`.
import { Module } from "../nn/module.js";
import { injectLora, loraMetadata, loraStateDict, setLoraEnabled } from "../nn/lora.js";
import { Generator as GeneratorClass, cat, full, noGrad, randn, tidy, zeros, type Generator, type Tensor } from "../tensor/index.js";
import { calculateShift, flowSetTimesteps, linspace64, type FlowMatchSchedulerConfig } from "../diffusion/flow/scheduler.js";
import { flowSample } from "../diffusion/flow/sample.js";
import { fluxCheckpointed, sd3Checkpointed, type CheckpointedRun } from "./flow-checkpoint.js";
import { perSampleErrors } from "../losses/preference.js";
import { flowMatchingNoising, type TrainingNoising } from "../diffusion/flow/training.js";
import { encodeSD3Prompt, type SD3Pipeline } from "./sd3/pipeline.js";
import { encodeFluxPrompt, type FluxPipeline } from "./flux/pipeline.js";
import type { SD3Transformer2DModel } from "./sd3/transformer.js";
import { latentImageIds, packLatents, unpackLatents, type FluxTransformer2DModel } from "./flux/transformer.js";

/** [N, L, D] states and [N, P] pooled (P ≤ D) → [N, L + 1, D]. */
export function packFlowConditioning(states: Tensor, pooled: Tensor): Tensor {
  const d = states.shape[2]!, p = pooled.shape[1]!;
  if (p > d) throw new Error(`packFlowConditioning: the pooled width ${p} exceeds the sequence width ${d}`);
  return cat([states, pooled.pad([0, d - p]).unsqueeze(1)], 1);
}

/** The inverse of packFlowConditioning. */
export function unpackFlowConditioning(cond: Tensor, pooledDim: number): { states: Tensor; pooled: Tensor } {
  const l = cond.shape[1]! - 1;
  return { states: cond.slice(1, 0, l), pooled: cond.slice(1, l).reshape([cond.shape[0]!, -1]).slice(1, 0, pooledDim) };
}

/**
 * The Flow-DPO noising of a family, as training and evaluation use it: SD3 draws σ logit-normal(0, 1)
 * over the shift-3 table (train_dreambooth_sd3's defaults), Flux uniform over the unshifted table
 * (train_dreambooth_flux's weighting_scheme "none").
 */
export function flowTrainingNoising(family: "sd3" | "flux", scheduler: FlowMatchSchedulerConfig): TrainingNoising {
  return flowMatchingNoising(scheduler, family === "sd3" ? { scheme: "logit_normal", logitMean: 0, logitStd: 1 } : { scheme: "uniform" });
}

/**
 * Prompts → packed conditioning (encode_prompt's states and pooled, packFlowConditioning) with the
 * training scripts' T5 max_sequence_length: 77 (SD3) / 512 (Flux).
 */
export function flowPromptEncoder(flow: { family: "sd3"; pipe: SD3Pipeline } | { family: "flux"; pipe: FluxPipeline }): (prompts: string[]) => Tensor {
  return (prompts) => {
    const e = flow.family === "sd3" ? encodeSD3Prompt(flow.pipe, prompts, 77) : encodeFluxPrompt(flow.pipe, prompts, 512);
    return packFlowConditioning(e.promptEmbeds, e.pooledPromptEmbeds);
  };
}

/** diffusers' LoRA targets for the MMDiT / Flux blocks: attention (both streams) and feed-forwards. */
export const FLOW_LORA_TARGETS = [
  "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
  "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
  "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
  // SD3.5-medium's second (image-only) attention in its dual-attention blocks
  "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
  // Flux single-stream blocks: the MLP input (their fused proj_out is left alone, as the top-level proj_out)
  "proj_mlp",
] as const;

/** The SD3 transformer with the UNet's forward(sample, timestep, cond) signature. */
export class SD3Denoiser extends Module {
  readonly transformer: SD3Transformer2DModel;
  constructor(transformer: SD3Transformer2DModel) {
    super();
    this.transformer = this.child("transformer", transformer);
  }
  forward(sample: Tensor, timestep: Tensor, cond: Tensor): Tensor {
    return tidy(() => {
      const { states, pooled } = unpackFlowConditioning(cond, this.transformer.config.pooledProjectionDim);
      return this.transformer.forward({ hiddenStates: sample, encoderHiddenStates: states, pooledProjections: pooled, timestep: timestep.to("f32") });
    });
  }
  /** Per-block gradient checkpointing (train --gradient-checkpointing): see src/models/flow-checkpoint.ts. */
  forwardCheckpointed(sample: Tensor, timestep: Tensor, cond: Tensor): CheckpointedRun {
    const { states, pooled } = unpackFlowConditioning(cond, this.transformer.config.pooledProjectionDim);
    return sd3Checkpointed(this.transformer, sample, timestep.to("f32"), states, pooled);
  }
}

/** The Flux transformer on unpacked latents [N, C, H, W]; timesteps σ·1000 as the flow step gives them. */
export class FluxDenoiser extends Module {
  readonly transformer: FluxTransformer2DModel;
  /** The guidance-embedding input during training (train_dreambooth_flux: --guidance_scale, default 3.5). */
  guidance: number;
  constructor(transformer: FluxTransformer2DModel, opts: { guidance?: number } = {}) {
    super();
    this.transformer = this.child("transformer", transformer);
    this.guidance = opts.guidance ?? 3.5;
  }
  forward(sample: Tensor, timestep: Tensor, cond: Tensor): Tensor {
    return tidy(() => {
      const [n, , h, w] = sample.shape as [number, number, number, number];
      const { states, pooled } = unpackFlowConditioning(cond, this.transformer.config.pooledProjectionDim);
      const v = this.transformer.forward({
        hiddenStates: packLatents(sample), encoderHiddenStates: states, pooledProjections: pooled,
        timestep: timestep.to("f32").div(1000), imgIds: latentImageIds(n, h, w, sample.device),
        txtIds: zeros([n, states.shape[1]!, 3], { device: sample.device }),
        guidance: this.transformer.config.guidanceEmbeds ? full([n], this.guidance, { device: sample.device }) : null,
      });
      return unpackLatents(v, h, w);
    });
  }
  /** Per-block gradient checkpointing (train --gradient-checkpointing): see src/models/flow-checkpoint.ts. */
  forwardCheckpointed(sample: Tensor, timestep: Tensor, cond: Tensor): CheckpointedRun {
    const n = sample.shape[0]!;
    const { states, pooled } = unpackFlowConditioning(cond, this.transformer.config.pooledProjectionDim);
    const guidance = this.transformer.config.guidanceEmbeds ? full([n], this.guidance, { device: sample.device }) : null;
    return fluxCheckpointed(this.transformer, sample, timestep.to("f32").div(1000), states, pooled, guidance);
  }
}

/**
 * Injects LoRA into a flow denoiser's transformer (FLOW_LORA_TARGETS by default) and returns the
 * trainer's LoraAdapters: checkpoints and the final file keyed `transformer.<path>.lora_A/B.weight`
 * (diffusers' SD3 / Flux LoRA naming, peft A/B), metadata under "transformer.".
 */
export function injectFlowLora(denoiser: SD3Denoiser | FluxDenoiser, opts: { rank: number; alpha?: number; targets?: readonly string[]; init?: "kaiming" | "gaussian" }) {
  injectLora(denoiser, { rank: opts.rank, alpha: opts.alpha ?? opts.rank, targets: opts.targets ?? FLOW_LORA_TARGETS, init: opts.init ?? "kaiming" });
  return {
    setEnabled: (on: boolean) => setLoraEnabled(denoiser, on),
    stateDict: () => loraStateDict(denoiser),
    exportStateDict: () => loraStateDict(denoiser, { format: "peft", prefix: "" }),
    exportMetadata: () => loraMetadata(denoiser.transformer, "transformer."),
  };
}

/**
 * Held-out implicit reward accuracy of a flow policy against its reference: per pair, `draws`
 * draws of (σ, ε) shared by both images; inside > 0 when the policy lowers the chosen error more
 * than the rejected one relative to the reference. Returns the fraction right (ties ½).
 */
export function flowImplicitAccuracy(o: {
  policy: (x: Tensor, t: Tensor, c: Tensor) => Tensor;
  reference: (x: Tensor, t: Tensor, c: Tensor) => Tensor;
  noising: TrainingNoising;
  /** [2N, C, H, W] laid out [chosen…, rejected…]. */
  pairs: Tensor;
  /** [N, L + 1, D] packed conditioning. */
  cond: Tensor;
  gen: Generator;
  draws?: number;
}): number {
  const n = o.cond.shape[0]!;
  let right = 0;
  const draws = o.draws ?? 4;
  for (let d = 0; d < draws; d++) {
    right += tidy(() => noGrad(() => {
      const [, c, h, w] = o.pairs.shape as [number, number, number, number];
      const eps = randn([n, c, h, w], o.gen);
      const t = o.noising.drawTimesteps(n, o.gen);
      const noise = cat([eps, eps], 0), tt = [...t, ...t];
      const xt = o.noising.noise(o.pairs, noise, tt);
      const target = o.noising.target(o.pairs, noise, tt);
      const ts = o.noising.modelTimesteps(tt, o.pairs.device);
      const cond = cat([o.cond, o.cond], 0);
      const p = perSampleErrors(o.policy(xt, ts, cond), target);
      const r = perSampleErrors(o.reference(xt, ts, cond), target);
      const margin = p.lw.sub(p.ll).sub(r.lw.sub(r.ll)).toArray();
      return margin.reduce((a, m) => a + (m < 0 ? 1 : m === 0 ? 0.5 : 0), 0);
    }));
  }
  return right / (n * draws);
}

export interface FlowValidationOptions {
  family: "sd3" | "flux";
  /** Prompts → packed conditioning (as the training step gets it). */
  encodePrompts: (prompts: string[]) => Tensor;
  scheduler: FlowMatchSchedulerConfig;
  /** [C, h, w] of the unpacked latents. */
  shape: [number, number, number];
  steps: number;
  /** SD3: classifier-free guidance against "" (≤ 1: off). Flux: unused (its guidance is the denoiser's embedding input). */
  guidanceScale: number;
  /** Latents → pixels [1, 3, H, W] in [−1, 1] (the VAE's decodeLatents). */
  decode: (x: Tensor) => Tensor;
  device?: string;
}

/**
 * The trainer's `sampleValidation` for SD3 / Flux denoisers: the seed's latents (torch.randn of a
 * CPU generator seeded `seed`, as the pipelines draw them), FlowMatch Euler over the pipeline's
 * schedule (Flux: μ from the token count, σ = linspace(1, 1/n, n)), decoded to [3, H, W].
 */
export function flowValidationSampler(o: FlowValidationOptions): (denoiser: (x: Tensor, t: Tensor, c: Tensor) => Tensor, prompt: string, seed: number) => Tensor {
  return (denoiser, prompt, seed) => tidy(() => noGrad(() => {
    const [c, h, w] = o.shape;
    const latents = randn([1, c, h, w], new GeneratorClass(seed)).toDevice(o.device ?? "cpu");
    const cfg = o.family === "sd3" && o.guidanceScale > 1;
    const cond = cfg ? cat([o.encodePrompts([""]), o.encodePrompts([prompt])], 0) : o.encodePrompts([prompt]);
    const schedule = o.family === "sd3"
      ? flowSetTimesteps(o.scheduler, o.steps)
      : flowSetTimesteps(o.scheduler, o.steps, { mu: calculateShift((h / 2) * (w / 2), o.scheduler), sigmas: linspace64(1, 1 / o.steps, o.steps) });
    const x0 = flowSample({
      latents, schedule, guidanceScale: cfg ? o.guidanceScale : 1,
      velocity: (x, t) => denoiser(x, full([x.shape[0]!], t, { device: x.device }), cond),
    });
    const img = o.decode(x0);
    return img.float().clamp(-1, 1).reshape([3, img.shape[2]!, img.shape[3]!]);
  }));
}
