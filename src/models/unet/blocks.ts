// The UNet's down, middle and up blocks (diffusers' unet_2d_blocks.py): CrossAttnDownBlock2D,
// DownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D, UpBlock2D.
import type { Tensor } from "../../tensor/tensor.js";
import { cat } from "../../tensor/ops.js";
import { Module, ModuleList } from "../../nn/module.js";
import { Downsample2D, ResnetBlock2D, Transformer2DModel, Upsample2D } from "./layers.js";

export interface BlockOptions {
  numLayers: number;
  tembChannels: number;
  groups: number;
  eps: number;
  addSample: boolean; // add a downsampler / upsampler
  /** Only for cross-attention blocks. */
  attn?: { heads: number; crossAttentionDim: number; transformerLayers: number; linearProjection: boolean; onlyCrossAttention: boolean; upcast: boolean };
}

function makeTransformer(channels: number, o: BlockOptions): Transformer2DModel {
  const a = o.attn!;
  return new Transformer2DModel(a.heads, channels / a.heads, channels, {
    numLayers: a.transformerLayers, crossAttentionDim: a.crossAttentionDim, groups: o.groups,
    linearProjection: a.linearProjection, onlyCrossAttention: a.onlyCrossAttention, upcast: a.upcast,
  });
}

/** DownBlock2D / CrossAttnDownBlock2D (the latter when `attn` is given). */
export class DownBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel> | null;
  readonly downsamplers: ModuleList<Downsample2D> | null;
  constructor(inChannels: number, outChannels: number, o: BlockOptions) {
    super();
    this.resnets = this.child("resnets", new ModuleList<ResnetBlock2D>());
    this.attentions = o.attn ? this.child("attentions", new ModuleList<Transformer2DModel>()) : null;
    for (let i = 0; i < o.numLayers; i++) {
      this.resnets.push(new ResnetBlock2D(i === 0 ? inChannels : outChannels, outChannels, o.tembChannels, { groups: o.groups, eps: o.eps, outputScaleFactor: 1 }));
      this.attentions?.push(makeTransformer(outChannels, o));
    }
    this.downsamplers = o.addSample ? this.child("downsamplers", new ModuleList([new Downsample2D(outChannels)])) : null;
  }
  /** Returns the block output and the skip states it hands to the up path. */
  forward(x: Tensor, temb: Tensor, context: Tensor): { h: Tensor; skips: Tensor[] } {
    const skips: Tensor[] = [];
    let h = x;
    for (let i = 0; i < this.resnets.length; i++) {
      h = this.resnets.at(i).forward(h, temb);
      if (this.attentions) h = this.attentions.at(i).forward(h, context);
      skips.push(h);
    }
    if (this.downsamplers) {
      h = this.downsamplers.at(0).forward(h);
      skips.push(h);
    }
    return { h, skips };
  }
}

/** UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) per layer. */
export class MidBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel>;
  constructor(channels: number, o: BlockOptions & { outputScaleFactor: number }) {
    super();
    const r = () => new ResnetBlock2D(channels, channels, o.tembChannels, { groups: o.groups, eps: o.eps, outputScaleFactor: o.outputScaleFactor });
    this.resnets = this.child("resnets", new ModuleList([r()]));
    this.attentions = this.child("attentions", new ModuleList<Transformer2DModel>());
    for (let i = 0; i < o.numLayers; i++) {
      this.attentions.push(makeTransformer(channels, o));
      this.resnets.push(r());
    }
  }
  forward(x: Tensor, temb: Tensor, context: Tensor): Tensor {
    let h = this.resnets.at(0).forward(x, temb);
    for (let i = 0; i < this.attentions.length; i++) {
      h = this.attentions.at(i).forward(h, context);
      h = this.resnets.at(i + 1).forward(h, temb);
    }
    return h;
  }
}

/** UpBlock2D / CrossAttnUpBlock2D: each resnet takes the running features concatenated with one skip state. */
export class UpBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel> | null;
  readonly upsamplers: ModuleList<Upsample2D> | null;
  constructor(inChannels: number, prevOutputChannels: number, outChannels: number, o: BlockOptions) {
    super();
    this.resnets = this.child("resnets", new ModuleList<ResnetBlock2D>());
    this.attentions = o.attn ? this.child("attentions", new ModuleList<Transformer2DModel>()) : null;
    for (let i = 0; i < o.numLayers; i++) {
      const skipChannels = i === o.numLayers - 1 ? inChannels : outChannels;
      const resIn = i === 0 ? prevOutputChannels : outChannels;
      this.resnets.push(new ResnetBlock2D(resIn + skipChannels, outChannels, o.tembChannels, { groups: o.groups, eps: o.eps, outputScaleFactor: 1 }));
      this.attentions?.push(makeTransformer(outChannels, o));
    }
    this.upsamplers = o.addSample ? this.child("upsamplers", new ModuleList([new Upsample2D(outChannels)])) : null;
  }
  /** `skips` are consumed from the end (the most recent first). */
  forward(x: Tensor, skips: Tensor[], temb: Tensor, context: Tensor, upsampleSize?: [number, number]): Tensor {
    let h = x;
    for (let i = 0; i < this.resnets.length; i++) {
      const skip = skips.pop();
      if (skip === undefined) throw new Error("UNet up block ran out of skip connections (the block layout is inconsistent)");
      h = this.resnets.at(i).forward(cat([h, skip], 1), temb);
      if (this.attentions) h = this.attentions.at(i).forward(h, context);
    }
    if (this.upsamplers) h = this.upsamplers.at(0).forward(h, upsampleSize);
    return h;
  }
}
