// The layers the UNet, text encoder and VAE are built from, with torch.nn's parameter names and
// default initialisation.
import type { Tensor } from "../tensor/tensor.js";
import { conv2d, convTranspose2d, embedding, full, groupNorm, layerNorm, linear } from "../tensor/ops.js";
import { Module } from "./module.js";
import { kaimingUniform, normal } from "./init.js";

export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, hasBias = true) {
    super();
    this.weight = this.param("weight", kaimingUniform([outFeatures, inFeatures], inFeatures));
    this.bias = hasBias ? this.param("bias", kaimingUniform([outFeatures], inFeatures)) : null;
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

export interface Conv2dConfig {
  stride?: number;
  padding?: number;
  groups?: number;
  bias?: boolean;
}

export class Conv2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  readonly stride: number;
  readonly padding: number;
  readonly groups: number;
  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, cfg: Conv2dConfig = {}) {
    super();
    this.stride = cfg.stride ?? 1;
    this.padding = cfg.padding ?? 0;
    this.groups = cfg.groups ?? 1;
    const fanIn = (inChannels / this.groups) * kernelSize * kernelSize;
    this.weight = this.param("weight", kaimingUniform([outChannels, inChannels / this.groups, kernelSize, kernelSize], fanIn));
    this.bias = cfg.bias === false ? null : this.param("bias", kaimingUniform([outChannels], fanIn));
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding, groups: this.groups });
  }
}

export class ConvTranspose2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(
    readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number,
    readonly cfg: { stride?: number; padding?: number; outputPadding?: number; bias?: boolean } = {},
  ) {
    super();
    // torch computes fan_in from weight dim 1 (= outChannels for transposed convs).
    const fanIn = outChannels * kernelSize * kernelSize;
    this.weight = this.param("weight", kaimingUniform([inChannels, outChannels, kernelSize, kernelSize], fanIn));
    this.bias = cfg.bias === false ? null : this.param("bias", kaimingUniform([outChannels], fanIn));
  }
  forward(x: Tensor): Tensor {
    return convTranspose2d(x, this.weight, this.bias, {
      stride: this.cfg.stride ?? 1, padding: this.cfg.padding ?? 0, outputPadding: this.cfg.outputPadding ?? 0,
    });
  }
}

/**
 * Normalisation runs in its parameters' dtype. Under bf16 autocast the convolutions and linears
 * before a norm return bf16 while the norm's weight stays f32, and libtorch's group_norm /
 * layer_norm refuse mixed dtypes on CPU: the input is cast to the weight's dtype (an upcast to f32,
 * as torch.autocast's fp32 policy for norms does), and the next autocast op casts back down.
 */
function matchNormInput(x: Tensor, weight: Tensor | null): Tensor {
  return weight !== null && x.dtype !== weight.dtype ? x.to(weight.dtype) : x;
}

export class GroupNorm extends Module {
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(readonly numGroups: number, readonly numChannels: number, readonly eps = 1e-5, affine = true) {
    super();
    if (numChannels % numGroups !== 0) {
      throw new Error(`GroupNorm: ${numChannels} channels cannot be split into ${numGroups} groups`);
    }
    this.weight = affine ? this.param("weight", full([numChannels], 1)) : null;
    this.bias = affine ? this.param("bias", full([numChannels], 0)) : null;
  }
  forward(x: Tensor): Tensor {
    return groupNorm(matchNormInput(x, this.weight), this.numGroups, this.weight, this.bias, this.eps);
  }
}

export class LayerNorm extends Module {
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(readonly dim: number, readonly eps = 1e-5, affine = true) {
    super();
    this.weight = affine ? this.param("weight", full([dim], 1)) : null;
    this.bias = affine ? this.param("bias", full([dim], 0)) : null;
  }
  forward(x: Tensor): Tensor {
    return layerNorm(matchNormInput(x, this.weight), [this.dim], this.weight, this.bias, this.eps);
  }
}

export class Embedding extends Module {
  weight: Tensor;
  constructor(readonly numEmbeddings: number, readonly dim: number) {
    super();
    this.weight = this.param("weight", normal([numEmbeddings, dim], 0, 1));
  }
  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids);
  }
}
