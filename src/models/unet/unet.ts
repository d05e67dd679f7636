// UNet2DConditionModel: the Stable Diffusion 1.x/2.x denoiser with text cross-attention,
// structured and named exactly as diffusers' unets/unet_2d_condition.py so that a diffusers
// `diffusion_pytorch_model.safetensors` loads unchanged (see describeParameters for the names).
import type { Tensor } from "../../tensor/tensor.js";
import { tidy } from "../../tensor/tensor.js";
import { cat, full, getDefaultDevice, setDefaultDevice } from "../../tensor/ops.js";
import { Module, ModuleList } from "../../nn/module.js";
import { Conv2d, GroupNorm } from "../../nn/layers.js";
import { getInitGenerator } from "../../nn/init.js";
import { resolveBlocks, resolveUNetConfig, type UNetConfig, toDiffusersConfig } from "./config.js";
import { DownBlock, MidBlock, UpBlock, type BlockOptions } from "./blocks.js";
import { TimestepEmbedding, timestepEmbedding } from "./layers.js";
import { unpackConditioning, type AddedConditioning } from "../sdxl/conditioning.js";
import { checkpointedForward, type CheckpointedRun } from "./checkpoint.js";
import type { UNetInputs, UNetParts } from "./parts.js";

import { unetLayoutFromConfig, UNetNameMapper } from "../convert/unet-names.js";

export type { UNetInputs } from "./parts.js";

/** Each UNet's SGM name mapper, built on first use (a plain field would be walked as model state). */
const originalNames = new WeakMap<object, UNetNameMapper>();

export class UNet2DConditionModel extends Module implements UNetParts {
  readonly config: UNetConfig;
  readonly conv_in: Conv2d;
  readonly time_embedding: TimestepEmbedding;
  /** SDXL's "text_time" addition (null otherwise); add_time_proj has no parameters. */
  readonly add_embedding: TimestepEmbedding | null;
  readonly down_blocks: ModuleList<DownBlock>;
  readonly mid_block: MidBlock | null;
  readonly up_blocks: ModuleList<UpBlock>;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  /** Builds the network for a config (missing fields take diffusers' defaults). */
  constructor(config: Partial<UNetConfig> = {}) {
    super();
    const c = resolveUNetConfig(config);
    this.config = c;
    const r = resolveBlocks(c);
    const ch = c.blockOutChannels;
    const n = ch.length;
    const groups = c.normNumGroups;
    const eps = c.normEps;
    const temb = r.timeEmbedDim;

    this.conv_in = this.child("conv_in", new Conv2d(c.inChannels, ch[0]!, c.convInKernel, { padding: (c.convInKernel - 1) / 2 }));
    // time_proj (Timesteps) has no parameters; timestepEmbedding() computes it.
    this.time_embedding = this.child("time_embedding", new TimestepEmbedding(ch[0]!, temb));
    this.add_embedding = c.additionEmbedType === "text_time"
      ? this.child("add_embedding", new TimestepEmbedding(c.projectionClassEmbeddingsInputDim!, temb))
      : null;

    const attnOpts = (i: number, crossDim: number, layers: number, only: boolean): BlockOptions["attn"] => ({
      heads: r.numHeads[i]!, crossAttentionDim: crossDim, transformerLayers: layers,
      linearProjection: c.useLinearProjection, onlyCrossAttention: only, upcast: c.upcastAttention,
    });

    this.down_blocks = this.child("down_blocks", new ModuleList<DownBlock>());
    let outCh = ch[0]!;
    for (let i = 0; i < n; i++) {
      const inCh = outCh;
      outCh = ch[i]!;
      const cross = c.downBlockTypes[i] === "CrossAttnDownBlock2D";
      this.down_blocks.push(new DownBlock(inCh, outCh, {
        numLayers: r.layersPerBlock[i]!, tembChannels: temb, groups, eps, addSample: i < n - 1,
        attn: cross ? attnOpts(i, r.crossAttentionDim[i]!, r.transformerLayersPerBlock[i]!, r.onlyCrossAttention[i]!) : undefined,
      }));
    }

    this.mid_block = c.midBlockType === null ? null : this.child("mid_block", new MidBlock(ch[n - 1]!, {
      numLayers: 1, tembChannels: temb, groups, eps, addSample: false, outputScaleFactor: c.midBlockScaleFactor,
      attn: attnOpts(n - 1, r.crossAttentionDim[n - 1]!, r.transformerLayersPerBlock[n - 1]!, false),
    }));

    this.up_blocks = this.child("up_blocks", new ModuleList<UpBlock>());
    const rev = <T>(a: T[]) => [...a].reverse();
    const rCh = rev(ch);
    const rLayers = rev(r.layersPerBlock);
    const rCross = rev(r.crossAttentionDim);
    const rTLayers = rev(r.transformerLayersPerBlock);
    const rOnly = rev(r.onlyCrossAttention);
    const rHeads = rev(r.numHeads);
    outCh = rCh[0]!;
    for (let i = 0; i < n; i++) {
      const prevOut = outCh;
      outCh = rCh[i]!;
      const inCh = rCh[Math.min(i + 1, n - 1)]!;
      const cross = c.upBlockTypes[i] === "CrossAttnUpBlock2D";
      this.up_blocks.push(new UpBlock(inCh, prevOut, outCh, {
        numLayers: rLayers[i]! + 1, tembChannels: temb, groups, eps, addSample: i < n - 1,
        attn: cross ? {
          heads: rHeads[i]!, crossAttentionDim: rCross[i]!, transformerLayers: rTLayers[i]!,
          linearProjection: c.useLinearProjection, onlyCrossAttention: rOnly[i]!, upcast: c.upcastAttention,
        } : undefined,
      }));
    }

    this.conv_norm_out = this.child("conv_norm_out", new GroupNorm(groups, ch[0]!, eps));
    this.conv_out = this.child("conv_out", new Conv2d(ch[0]!, c.outChannels, c.convOutKernel, { padding: (c.convOutKernel - 1) / 2 }));
  }

  /** This UNet's config.json as diffusers writes it (what a saved unet/ folder needs to load). */
  diffusersConfig(): Record<string, unknown> {
    return toDiffusersConfig(this.config);
  }

  /**
   * Predicts the model output (ε, v or x0, whatever it was trained for).
   * @param sample noisy input [N, inChannels, H, W]
   * @param timestep one timestep for the batch, or one per sample ([N] or a scalar tensor)
   * @param encoderHiddenStates text embeddings [N, L, crossAttentionDim]; for a "text_time" UNet
   *   (SDXL) either with `added` given, or packed with it (src/models/sdxl/conditioning.ts)
   * @param added SDXL's added conditioning (diffusers' added_cond_kwargs text_embeds / time_ids)
   */
  /**
   * The checked inputs of a forward: the text states (unpacked for SDXL), the added conditioning,
   * one timestep per sample.
   */
  prepareInputs(sample: Tensor, timestep: Tensor | number, encoderHiddenStates: Tensor, added?: AddedConditioning): UNetInputs {
    const c = this.config;
    if (this.add_embedding !== null && added === undefined) {
      const unpacked = unpackConditioning(encoderHiddenStates);
      if (unpacked === null) {
        throw new Error(
          'this UNet has addition_embed_type "text_time" (SDXL) and needs the pooled text embeddings and time ids: ' +
            "pass them as `added`, or a conditioning packed with them (encodePrompts of an SDXL model)",
        );
      }
      encoderHiddenStates = unpacked.hidden;
      added = unpacked.added;
    }
    if (sample.ndim !== 4 || sample.shape[1] !== c.inChannels) {
      throw new Error(`UNet input must be [N, ${c.inChannels}, H, W], got [${sample.shape.join(", ")}]`);
    }
    const batch = sample.shape[0]!;
    if (encoderHiddenStates.ndim !== 3 || encoderHiddenStates.shape[0] !== batch) {
      throw new Error(`UNet encoderHiddenStates must be [${batch}, L, D], got [${encoderHiddenStates.shape.join(", ")}]`);
    }
    let t: Tensor;
    if (typeof timestep === "number") t = full([batch], timestep, { dtype: "f32", device: sample.device });
    else if (timestep.size === 1) t = timestep.reshape([1]).expand([batch]);
    else if (timestep.ndim === 1 && timestep.shape[0] === batch) t = timestep;
    else throw new Error(`UNet timestep must be a number, a scalar or a [${batch}] tensor, got [${timestep.shape.join(", ")}]`);
    return { hidden: encoderHiddenStates, added, t, batch };
  }

  /** The time embedding (plus SDXL's added embedding) every resnet receives. */
  embedding(inputs: UNetInputs, dtype: Tensor["dtype"]): Tensor {
    const c = this.config;
    let tEmb = timestepEmbedding(inputs.t, c.blockOutChannels[0]!, { flipSinToCos: c.flipSinToCos, freqShift: c.freqShift });
    if (tEmb.dtype !== dtype) tEmb = tEmb.to(dtype);
    let emb = this.time_embedding.forward(tEmb);
    if (this.add_embedding !== null) emb = emb.add(this.addedEmbedding(inputs.added!, inputs.batch, emb.dtype));
    return emb;
  }

  forward(sample: Tensor, timestep: Tensor | number, encoderHiddenStates: Tensor, added?: AddedConditioning): Tensor {
    const c = this.config;
    const inputs = this.prepareInputs(sample, timestep, encoderHiddenStates, added);
    encoderHiddenStates = inputs.hidden;
    const emb = this.embedding(inputs, sample.dtype);

    let h = c.centerInputSample ? sample.mul(2).sub(1) : sample;
    h = this.conv_in.forward(h);
    const skips: Tensor[] = [h];
    // Each block in its own scope: its temporaries are freed when it returns, not when the caller's
    // scope ends (a step's scope would otherwise hold every activation of the reference forward
    // and the non-saved ones of the policy's; autograd keeps its own references to what it saved).
    for (const block of this.down_blocks) {
      const out = tidy(() => block.forward(h, emb, encoderHiddenStates));
      h = out.h;
      skips.push(...out.skips);
    }
    const mid = this.mid_block;
    if (mid) h = tidy(() => mid.forward(h, emb, encoderHiddenStates));

    // Sizes that are not a multiple of 2^(number of upsamplers) need explicit upsample sizes.
    const factor = 2 ** (this.up_blocks.length - 1);
    const forwardSize = sample.shape.slice(2).some((s) => s % factor !== 0);
    for (let i = 0; i < this.up_blocks.length; i++) {
      const block = this.up_blocks.at(i);
      const mine = skips.splice(skips.length - block.resnets.length);
      const last = skips[skips.length - 1];
      const size = forwardSize && i < this.up_blocks.length - 1 && last ? [last.shape[2]!, last.shape[3]!] as [number, number] : undefined;
      const input = h;
      h = tidy(() => block.forward(input, mine, emb, encoderHiddenStates, size));
      // the skips are this forward's own tensors and used once (autograd holds what it saved)
      for (const t of mine) if (t !== h) t.dispose();
    }
    h = this.conv_norm_out.forward(h).silu();
    return this.conv_out.forward(h);
  }

  /**
   * forward with per-block gradient checkpointing (src/models/unet/checkpoint.ts): the output
   * without a graph, and a backward(gradOutput) that recomputes one block at a time.
   */
  forwardCheckpointed(sample: Tensor, timestep: Tensor | number, encoderHiddenStates: Tensor, added?: AddedConditioning): CheckpointedRun {
    return checkpointedForward(this, sample, timestep, encoderHiddenStates, added);
  }

  /**
   * A module path under original-SD / SGM naming (input_blocks.4.1.…), which kohya LoRA files for
   * SDXL use and A1111 / ComfyUI read; null where that naming has no such module. nn/lora.ts
   * matches kohya keys against these names too (see OriginalModuleNames there).
   */
  originalModulePath(path: string): string | null {
    let names = originalNames.get(this);
    if (names === undefined) {
      names = new UNetNameMapper(unetLayoutFromConfig(toDiffusersConfig(this.config)));
      originalNames.set(this, names);
    }
    return names.toOriginal(path);
  }

  /** diffusers' text_time branch: add_embedding(cat([text_embeds, add_time_proj(time_ids) per id])). */
  private addedEmbedding(added: AddedConditioning, batch: number, dtype: Tensor["dtype"]): Tensor {
    const c = this.config;
    const { textEmbeds, timeIds } = added;
    if (textEmbeds.ndim !== 2 || textEmbeds.shape[0] !== batch || timeIds.ndim !== 2 || timeIds.shape[0] !== batch) {
      throw new Error(`UNet added conditioning: text_embeds must be [${batch}, P] and time_ids [${batch}, T], got [${textEmbeds.shape.join(", ")}] and [${timeIds.shape.join(", ")}]`);
    }
    const dim = c.additionTimeEmbedDim!;
    const want = c.projectionClassEmbeddingsInputDim!;
    const got = textEmbeds.shape[1]! + timeIds.shape[1]! * dim;
    if (got !== want) {
      throw new Error(
        `UNet added conditioning: text_embeds width ${textEmbeds.shape[1]} + ${timeIds.shape[1]} time ids × ${dim} = ${got}, ` +
          `but projection_class_embeddings_input_dim is ${want}`,
      );
    }
    const timeEmb = timestepEmbedding(timeIds.reshape([-1]), dim, { flipSinToCos: c.flipSinToCos, freqShift: c.freqShift })
      .reshape([batch, timeIds.shape[1]! * dim]);
    const input = cat([textEmbeds.to("f32"), timeEmb], -1);
    return this.add_embedding!.forward(input.dtype === dtype ? input : input.to(dtype));
  }
}

export interface ParameterDescription {
  name: string;
  shape: number[];
}

/**
 * The parameter names and shapes of the UNet for a config, without allocating weights (the model
 * is built on libtorch's "meta" device). SD1.5 lists 686 tensors, 859,520,964 values. The
 * init generator's state is restored afterwards; the initialisers leave meta tensors unfilled, so
 * this takes well under a second even for SD1.5.
 */
export function describeParameters(config: Partial<UNetConfig>): ParameterDescription[] {
  const previous = getDefaultDevice();
  // Building draws initial values; leave the init generator's sequence as it was.
  const rngState = getInitGenerator().getState();
  setDefaultDevice("meta");
  try {
    const model = new UNet2DConditionModel(config);
    const out = model.namedParameters().map(([name, p]) => ({ name, shape: [...p.shape] }));
    model.dispose();
    return out;
  } finally {
    setDefaultDevice(previous);
    getInitGenerator().setState(rngState);
  }
}
