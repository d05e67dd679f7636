// The KL autoencoder of latent diffusion as diffusers' `AutoencoderKL`: the same module tree and
// parameter names (encoder.down_blocks.{i}.resnets.{j}, …, quant_conv, post_quant_conv,
// decoder.up_blocks.{i}.upsamplers.0.conv), so a Stable Diffusion `vae/` folder loads one to one.
//
//   encode: x [N, 3, H, W] → Encoder → quant_conv → moments [N, 2·latent, H/f, W/f]
//           → DiagonalGaussian(mean, logvar)        (f = 2^(number of blocks − 1))
//   decode: z → post_quant_conv → Decoder → [N, 3, H, W]
// Diffusion runs on z·scalingFactor (0.18215 for SD1.x/2.x); see encodeLatents / decodeLatents.
import { z as zod } from "zod";
import { Module, ModuleList } from "../../nn/module.js";
import { Conv2d, GroupNorm, Linear } from "../../nn/layers.js";
import { attention, interpolateNearest, randn, type Generator, type Tensor } from "../../tensor/index.js";

export type VaeDownBlockType = "DownEncoderBlock2D";
export type VaeUpBlockType = "UpDecoderBlock2D";

/** diffusers' AutoencoderKL config (camelCase here; snake_case in vae/config.json). */
export interface AutoencoderKLConfig {
  inChannels: number;
  outChannels: number;
  downBlockTypes: VaeDownBlockType[];
  upBlockTypes: VaeUpBlockType[];
  blockOutChannels: number[];
  layersPerBlock: number;
  actFn: "silu";
  latentChannels: number;
  normNumGroups: number;
  sampleSize: number;
  /** Latents fed to the diffusion model are (z − shiftFactor)·scalingFactor. */
  scalingFactor: number;
  shiftFactor: number | null;
  forceUpcast: boolean;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
  midBlockAddAttention: boolean;
}

/** diffusers' AutoencoderKL() defaults. */
export const DEFAULT_AUTOENCODER_KL_CONFIG: AutoencoderKLConfig = {
  inChannels: 3,
  outChannels: 3,
  downBlockTypes: ["DownEncoderBlock2D"],
  upBlockTypes: ["UpDecoderBlock2D"],
  blockOutChannels: [64],
  layersPerBlock: 1,
  actFn: "silu",
  latentChannels: 4,
  normNumGroups: 32,
  sampleSize: 32,
  scalingFactor: 0.18215,
  shiftFactor: null,
  forceUpcast: true,
  useQuantConv: true,
  usePostQuantConv: true,
  midBlockAddAttention: true,
};

/** Stable Diffusion 1.x/2.x's VAE (8× downsampling, 4 latent channels). */
export const SD_AUTOENCODER_KL_CONFIG: AutoencoderKLConfig = {
  ...DEFAULT_AUTOENCODER_KL_CONFIG,
  downBlockTypes: Array(4).fill("DownEncoderBlock2D") as VaeDownBlockType[],
  upBlockTypes: Array(4).fill("UpDecoderBlock2D") as VaeUpBlockType[],
  blockOutChannels: [128, 256, 512, 512],
  layersPerBlock: 2,
  sampleSize: 512,
};

/** A two-level VAE (2× downsampling) small enough for CPU tests (as diffusers' tests' tiny VAE). */
export const TINY_AUTOENCODER_KL_CONFIG: AutoencoderKLConfig = {
  ...DEFAULT_AUTOENCODER_KL_CONFIG,
  downBlockTypes: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  upBlockTypes: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
  blockOutChannels: [32, 64],
  layersPerBlock: 1,
  normNumGroups: 8,
  sampleSize: 32,
};

const vaeJson = zod.looseObject({
  in_channels: zod.number().int().positive().optional(),
  out_channels: zod.number().int().positive().optional(),
  down_block_types: zod.array(zod.literal("DownEncoderBlock2D")).min(1).optional(),
  up_block_types: zod.array(zod.literal("UpDecoderBlock2D")).min(1).optional(),
  block_out_channels: zod.array(zod.number().int().positive()).min(1).optional(),
  layers_per_block: zod.number().int().positive().optional(),
  act_fn: zod.literal("silu").optional(),
  latent_channels: zod.number().int().positive().optional(),
  norm_num_groups: zod.number().int().positive().optional(),
  sample_size: zod.union([zod.number().int().positive(), zod.array(zod.number().int().positive())]).optional(),
  scaling_factor: zod.number().positive().optional(),
  shift_factor: zod.number().nullable().optional(),
  force_upcast: zod.boolean().optional(),
  use_quant_conv: zod.boolean().optional(),
  use_post_quant_conv: zod.boolean().optional(),
  mid_block_add_attention: zod.boolean().optional(),
});

/** The config.json keys the VAE reads (others are reported by src/models/config-warnings.ts). */
export const VAE_CONFIG_KEYS: readonly string[] = Object.keys(vaeJson.shape);

/** Reads a vae/config.json object (missing fields take diffusers' defaults). */
export function autoencoderKLConfigFromJson(json: unknown, source = "vae/config.json"): AutoencoderKLConfig {
  const parsed = vaeJson.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new Error(`${source}: not a valid AutoencoderKL config (${issues}); only DownEncoderBlock2D/UpDecoderBlock2D blocks and act_fn "silu" are supported`);
  }
  const j = parsed.data;
  const d = DEFAULT_AUTOENCODER_KL_CONFIG;
  const sample = j.sample_size === undefined ? d.sampleSize : Array.isArray(j.sample_size) ? j.sample_size[0]! : j.sample_size;
  const config: AutoencoderKLConfig = {
    inChannels: j.in_channels ?? d.inChannels,
    outChannels: j.out_channels ?? d.outChannels,
    downBlockTypes: j.down_block_types ?? d.downBlockTypes,
    upBlockTypes: j.up_block_types ?? d.upBlockTypes,
    blockOutChannels: j.block_out_channels ?? d.blockOutChannels,
    layersPerBlock: j.layers_per_block ?? d.layersPerBlock,
    actFn: j.act_fn ?? d.actFn,
    latentChannels: j.latent_channels ?? d.latentChannels,
    normNumGroups: j.norm_num_groups ?? d.normNumGroups,
    sampleSize: sample,
    scalingFactor: j.scaling_factor ?? d.scalingFactor,
    shiftFactor: j.shift_factor ?? d.shiftFactor,
    forceUpcast: j.force_upcast ?? d.forceUpcast,
    useQuantConv: j.use_quant_conv ?? d.useQuantConv,
    usePostQuantConv: j.use_post_quant_conv ?? d.usePostQuantConv,
    midBlockAddAttention: j.mid_block_add_attention ?? d.midBlockAddAttention,
  };
  validateAutoencoderKLConfig(config, source);
  return config;
}

/** The config as diffusers writes vae/config.json. */
export function autoencoderKLConfigToJson(config: AutoencoderKLConfig, diffusersVersion = "0.30.0"): Record<string, unknown> {
  return {
    _class_name: "AutoencoderKL",
    _diffusers_version: diffusersVersion,
    act_fn: config.actFn,
    block_out_channels: config.blockOutChannels,
    down_block_types: config.downBlockTypes,
    force_upcast: config.forceUpcast,
    in_channels: config.inChannels,
    latent_channels: config.latentChannels,
    layers_per_block: config.layersPerBlock,
    mid_block_add_attention: config.midBlockAddAttention,
    norm_num_groups: config.normNumGroups,
    out_channels: config.outChannels,
    sample_size: config.sampleSize,
    scaling_factor: config.scalingFactor,
    shift_factor: config.shiftFactor,
    up_block_types: config.upBlockTypes,
    use_post_quant_conv: config.usePostQuantConv,
    use_quant_conv: config.useQuantConv,
  };
}

export function validateAutoencoderKLConfig(c: AutoencoderKLConfig, source = "AutoencoderKLConfig"): void {
  const n = c.blockOutChannels.length;
  if (c.downBlockTypes.length !== n || c.upBlockTypes.length !== n) {
    throw new Error(`${source}: down_block_types (${c.downBlockTypes.length}), up_block_types (${c.upBlockTypes.length}) and block_out_channels (${n}) must have the same length`);
  }
  for (const ch of c.blockOutChannels) {
    if (ch % c.normNumGroups !== 0) {
      throw new Error(`${source}: block_out_channels entry ${ch} is not divisible by norm_num_groups ${c.normNumGroups}`);
    }
  }
}

/** The downsampling factor between pixels and latents (8 for Stable Diffusion). */
export function vaeScaleFactor(config: AutoencoderKLConfig): number {
  return 2 ** (config.blockOutChannels.length - 1);
}

const EPS = 1e-6; // diffusers' VAE resnets and norms use eps 1e-6

/** diffusers' ResnetBlock2D without a time embedding (temb_channels=None). */
export class VaeResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut: Conv2d | null;
  constructor(inChannels: number, outChannels: number, groups: number) {
    super();
    this.norm1 = this.child("norm1", new GroupNorm(groups, inChannels, EPS));
    this.conv1 = this.child("conv1", new Conv2d(inChannels, outChannels, 3, { padding: 1 }));
    this.norm2 = this.child("norm2", new GroupNorm(groups, outChannels, EPS));
    this.conv2 = this.child("conv2", new Conv2d(outChannels, outChannels, 3, { padding: 1 }));
    this.conv_shortcut = inChannels !== outChannels ? this.child("conv_shortcut", new Conv2d(inChannels, outChannels, 1)) : null;
  }
  forward(x: Tensor): Tensor {
    let h = this.conv1.forward(this.norm1.forward(x).silu());
    h = this.conv2.forward(this.norm2.forward(h).silu());
    const skip = this.conv_shortcut ? this.conv_shortcut.forward(x) : x;
    return skip.add(h);
  }
}

/**
 * diffusers' Attention as the VAE mid block builds it (one head of width C, group norm in front,
 * residual connection). Older checkpoints name its linears query/key/value/proj_attn; see
 * convertLegacyVaeStateDict.
 */
export class VaeAttention extends Module {
  readonly group_norm: GroupNorm;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: ModuleList<Linear>;
  constructor(readonly channels: number, groups: number) {
    super();
    this.group_norm = this.child("group_norm", new GroupNorm(groups, channels, EPS));
    this.to_q = this.child("to_q", new Linear(channels, channels));
    this.to_k = this.child("to_k", new Linear(channels, channels));
    this.to_v = this.child("to_v", new Linear(channels, channels));
    // to_out.1 is a Dropout (no parameters): only index 0 exists in the state dict.
    this.to_out = this.child("to_out", new ModuleList([new Linear(channels, channels)]));
  }
  forward(x: Tensor): Tensor {
    const [n, c, h, w] = x.shape as [number, number, number, number];
    const tokens = this.group_norm.forward(x).reshape([n, c, h * w]).transpose(1, 2); // [N, HW, C]
    const q = this.to_q.forward(tokens).unsqueeze(1); // one head: [N, 1, HW, C]
    const k = this.to_k.forward(tokens).unsqueeze(1);
    const v = this.to_v.forward(tokens).unsqueeze(1);
    const out = this.to_out.at(0).forward(attention(q, k, v).squeeze(1)); // [N, HW, C]
    return out.transpose(1, 2).reshape([n, c, h, w]).add(x);
  }
}

/** diffusers' Downsample2D(use_conv=True, padding=0): pad right/bottom by one, 3×3 conv stride 2. */
export class VaeDownsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number) {
    super();
    this.conv = this.child("conv", new Conv2d(channels, channels, 3, { stride: 2, padding: 0 }));
  }
  forward(x: Tensor): Tensor {
    return this.conv.forward(x.pad([0, 1, 0, 1], 0));
  }
}

/** diffusers' Upsample2D(use_conv=True): nearest 2× then a 3×3 conv. */
export class VaeUpsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number) {
    super();
    this.conv = this.child("conv", new Conv2d(channels, channels, 3, { padding: 1 }));
  }
  forward(x: Tensor): Tensor {
    return this.conv.forward(interpolateNearest(x, { scale: 2 }));
  }
}

export class DownEncoderBlock2D extends Module {
  readonly resnets: ModuleList<VaeResnetBlock2D>;
  readonly downsamplers: ModuleList<VaeDownsample2D> | null;
  constructor(inChannels: number, outChannels: number, layers: number, groups: number, addDownsample: boolean) {
    super();
    this.resnets = this.child("resnets", new ModuleList(
      Array.from({ length: layers }, (_, j) => new VaeResnetBlock2D(j === 0 ? inChannels : outChannels, outChannels, groups)),
    ));
    this.downsamplers = addDownsample ? this.child("downsamplers", new ModuleList([new VaeDownsample2D(outChannels)])) : null;
  }
  forward(x: Tensor): Tensor {
    let h = x;
    for (const r of this.resnets) h = r.forward(h);
    if (this.downsamplers) h = this.downsamplers.at(0).forward(h);
    return h;
  }
}

export class UpDecoderBlock2D extends Module {
  readonly resnets: ModuleList<VaeResnetBlock2D>;
  readonly upsamplers: ModuleList<VaeUpsample2D> | null;
  constructor(inChannels: number, outChannels: number, layers: number, groups: number, addUpsample: boolean) {
    super();
    this.resnets = this.child("resnets", new ModuleList(
      Array.from({ length: layers }, (_, j) => new VaeResnetBlock2D(j === 0 ? inChannels : outChannels, outChannels, groups)),
    ));
    this.upsamplers = addUpsample ? this.child("upsamplers", new ModuleList([new VaeUpsample2D(outChannels)])) : null;
  }
  forward(x: Tensor): Tensor {
    let h = x;
    for (const r of this.resnets) h = r.forward(h);
    if (this.upsamplers) h = this.upsamplers.at(0).forward(h);
    return h;
  }
}

/** diffusers' UNetMidBlock2D without time embedding: resnet, (attention, resnet) × 1. */
export class UNetMidBlock2D extends Module {
  readonly attentions: ModuleList<VaeAttention> | null;
  readonly resnets: ModuleList<VaeResnetBlock2D>;
  constructor(channels: number, groups: number, addAttention: boolean) {
    super();
    this.attentions = addAttention ? this.child("attentions", new ModuleList([new VaeAttention(channels, groups)])) : null;
    this.resnets = this.child("resnets", new ModuleList([
      new VaeResnetBlock2D(channels, channels, groups), new VaeResnetBlock2D(channels, channels, groups),
    ]));
  }
  forward(x: Tensor): Tensor {
    let h = this.resnets.at(0).forward(x);
    if (this.attentions) h = this.attentions.at(0).forward(h);
    return this.resnets.at(1).forward(h);
  }
}

export class VaeEncoder extends Module {
  readonly conv_in: Conv2d;
  readonly down_blocks: ModuleList<DownEncoderBlock2D>;
  readonly mid_block: UNetMidBlock2D;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  constructor(c: AutoencoderKLConfig) {
    super();
    const ch = c.blockOutChannels;
    const g = c.normNumGroups;
    this.conv_in = this.child("conv_in", new Conv2d(c.inChannels, ch[0]!, 3, { padding: 1 }));
    this.down_blocks = this.child("down_blocks", new ModuleList(ch.map((out, i) =>
      new DownEncoderBlock2D(i === 0 ? ch[0]! : ch[i - 1]!, out, c.layersPerBlock, g, i < ch.length - 1))));
    const last = ch[ch.length - 1]!;
    this.mid_block = this.child("mid_block", new UNetMidBlock2D(last, g, c.midBlockAddAttention));
    this.conv_norm_out = this.child("conv_norm_out", new GroupNorm(g, last, EPS));
    this.conv_out = this.child("conv_out", new Conv2d(last, 2 * c.latentChannels, 3, { padding: 1 })); // double_z
  }
  forward(x: Tensor): Tensor {
    let h = this.conv_in.forward(x);
    for (const b of this.down_blocks) h = b.forward(h);
    h = this.mid_block.forward(h);
    return this.conv_out.forward(this.conv_norm_out.forward(h).silu());
  }
}

export class VaeDecoder extends Module {
  readonly conv_in: Conv2d;
  readonly up_blocks: ModuleList<UpDecoderBlock2D>;
  readonly mid_block: UNetMidBlock2D;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  constructor(c: AutoencoderKLConfig) {
    super();
    const rev = [...c.blockOutChannels].reverse();
    const g = c.normNumGroups;
    this.conv_in = this.child("conv_in", new Conv2d(c.latentChannels, rev[0]!, 3, { padding: 1 }));
    // diffusers registers up_blocks (empty) before mid_block, then fills it.
    this.up_blocks = this.child("up_blocks", new ModuleList<UpDecoderBlock2D>());
    this.mid_block = this.child("mid_block", new UNetMidBlock2D(rev[0]!, g, c.midBlockAddAttention));
    rev.forEach((out, i) => {
      const prev = i === 0 ? rev[0]! : rev[i - 1]!;
      this.up_blocks.push(new UpDecoderBlock2D(prev, out, c.layersPerBlock + 1, g, i < rev.length - 1));
    });
    const first = c.blockOutChannels[0]!;
    this.conv_norm_out = this.child("conv_norm_out", new GroupNorm(g, first, EPS));
    this.conv_out = this.child("conv_out", new Conv2d(first, c.outChannels, 3, { padding: 1 }));
  }
  forward(z: Tensor): Tensor {
    let h = this.mid_block.forward(this.conv_in.forward(z));
    for (const b of this.up_blocks) h = b.forward(h);
    return this.conv_out.forward(this.conv_norm_out.forward(h).silu());
  }
}

/** diffusers' DiagonalGaussianDistribution: the encoder's posterior over latents. */
export class DiagonalGaussian {
  readonly mean: Tensor;
  /** log σ², clamped to [−30, 20] as diffusers does. */
  readonly logvar: Tensor;
  readonly std: Tensor;
  constructor(moments: Tensor) {
    const [mean, logvar] = moments.chunk(2, 1) as [Tensor, Tensor];
    this.mean = mean;
    this.logvar = logvar.clamp(-30, 20);
    this.std = this.logvar.mul(0.5).exp();
  }
  /**
   * mean + σ·ε with ε ~ N(0, I) drawn from `gen` (on the CPU, then moved, as diffusers' randn_tensor),
   * or ε given by a function of the latent shape (a trainer that draws it for a whole global batch).
   */
  sample(noise: Generator | ((shape: readonly number[]) => Tensor)): Tensor {
    const eps = typeof noise === "function"
      ? noise(this.mean.shape).to(this.mean.dtype)
      : randn(this.mean.shape, noise, { dtype: this.mean.dtype, device: this.mean.device });
    return this.mean.add(this.std.mul(eps));
  }
  mode(): Tensor {
    return this.mean;
  }
  /** KL(q ‖ N(0, I)) per sample: ½·Σ(μ² + σ² − 1 − log σ²) over channels and pixels. */
  kl(): Tensor {
    return this.mean.square().add(this.logvar.exp()).sub(1).sub(this.logvar).sum([1, 2, 3]).mul(0.5);
  }
}

/**
 * diffusers' AutoencoderKL. `encode` returns the posterior; `decode` maps latents (unscaled) back
 * to pixels; encodeLatents / decodeLatents apply scalingFactor and shiftFactor for the diffusion
 * model.
 */
export class AutoencoderKL extends Module {
  readonly encoder: VaeEncoder;
  readonly decoder: VaeDecoder;
  readonly quant_conv: Conv2d | null;
  readonly post_quant_conv: Conv2d | null;
  constructor(readonly config: AutoencoderKLConfig) {
    super();
    validateAutoencoderKLConfig(config);
    const l = config.latentChannels;
    this.encoder = this.child("encoder", new VaeEncoder(config));
    this.decoder = this.child("decoder", new VaeDecoder(config));
    this.quant_conv = config.useQuantConv ? this.child("quant_conv", new Conv2d(2 * l, 2 * l, 1)) : null;
    this.post_quant_conv = config.usePostQuantConv ? this.child("post_quant_conv", new Conv2d(l, l, 1)) : null;
  }

  /** Pixels [N, C, H, W] in [−1, 1] (H, W divisible by vaeScaleFactor) → posterior. */
  encode(x: Tensor): DiagonalGaussian {
    const f = vaeScaleFactor(this.config);
    if (x.ndim !== 4 || x.shape[1] !== this.config.inChannels || x.shape[2]! % f !== 0 || x.shape[3]! % f !== 0) {
      throw new Error(`AutoencoderKL.encode: expected [N, ${this.config.inChannels}, H, W] with H and W divisible by ${f}, got [${x.shape.join(", ")}]`);
    }
    let moments = this.encoder.forward(x);
    if (this.quant_conv) moments = this.quant_conv.forward(moments);
    return new DiagonalGaussian(moments);
  }

  /** Latents [N, latent, h, w] (unscaled) → pixels [N, outChannels, h·f, w·f]. */
  decode(z: Tensor): Tensor {
    if (z.ndim !== 4 || z.shape[1] !== this.config.latentChannels) {
      throw new Error(`AutoencoderKL.decode: expected [N, ${this.config.latentChannels}, h, w], got [${z.shape.join(", ")}]`);
    }
    const h = this.post_quant_conv ? this.post_quant_conv.forward(z) : z;
    return this.decoder.forward(h);
  }

  /** diffusers' forward: decode(posterior sample if a generator is given, else its mode). */
  forward(x: Tensor, gen?: Generator): Tensor {
    const posterior = this.encode(x);
    return this.decode(gen ? posterior.sample(gen) : posterior.mode());
  }

  /** Pixels → the diffusion model's latents: (z − shift)·scalingFactor, z sampled (or the mean without gen). */
  encodeLatents(x: Tensor, gen?: Generator | ((shape: readonly number[]) => Tensor)): Tensor {
    const posterior = this.encode(x);
    const z = gen ? posterior.sample(gen) : posterior.mode();
    const shifted = this.config.shiftFactor !== null ? z.sub(this.config.shiftFactor) : z;
    return shifted.mul(this.config.scalingFactor);
  }

  /** The diffusion model's latents → pixels: decode(latents / scalingFactor + shift). */
  decodeLatents(latents: Tensor): Tensor {
    let z = latents.div(this.config.scalingFactor);
    if (this.config.shiftFactor !== null) z = z.add(this.config.shiftFactor);
    return this.decode(z);
  }

  /** As Module.loadStateDict after convertLegacyVaeStateDict (old query/key/value/proj_attn names). */
  override loadStateDict(state: Map<string, Tensor>, opts: { strict?: boolean; source?: string } = {}): { missing: string[]; unexpected: string[] } {
    const converted = convertLegacyVaeStateDict(state);
    try {
      return super.loadStateDict(converted.state, opts);
    } finally {
      for (const t of converted.created) t.dispose();
    }
  }
}

const LEGACY_ATTENTION = /^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$/;
const LEGACY_RENAME: Record<string, string> = { query: "to_q", key: "to_k", value: "to_v", proj_attn: "to_out.0" };

/** The current diffusers name for a VAE weight name (legacy attention names renamed, others unchanged). */
export function currentVaeWeightName(name: string): string {
  const m = LEGACY_ATTENTION.exec(name);
  return m === null ? name : `${m[1]}.${LEGACY_RENAME[m[2]!]}.${m[3]}`;
}

/**
 * Renames the attention weights of VAE checkpoints saved by diffusers < 0.14 (query, key, value,
 * proj_attn) to the current names (to_q, to_k, to_v, to_out.0), as diffusers does on load, and
 * flattens 1×1-conv-shaped weights [C, C, 1, 1] to linear [C, C]. Other names pass through.
 * `created` holds the reshaped tensors the caller owns.
 */
export function convertLegacyVaeStateDict(state: Map<string, Tensor>): { state: Map<string, Tensor>; created: Tensor[]; renamed: string[] } {
  const out = new Map<string, Tensor>();
  const created: Tensor[] = [];
  const renamed: string[] = [];
  for (const [name, t] of state) {
    const m = LEGACY_ATTENTION.exec(name);
    const isNew = /\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(name);
    let value = t;
    if ((m !== null || isNew) && t.ndim === 4 && t.shape[2] === 1 && t.shape[3] === 1) {
      value = t.reshape([t.shape[0]!, t.shape[1]!]);
      created.push(value);
    }
    if (m !== null) {
      const target = currentVaeWeightName(name);
      if (state.has(target)) throw new Error(`checkpoint holds both the legacy "${name}" and the current "${target}"; remove one`);
      out.set(target, value);
      renamed.push(name);
    } else out.set(name, value);
  }
  return { state: out, created, renamed };
}
