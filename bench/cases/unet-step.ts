// One training step of a small UNet beside PyTorch (bench/torch/unet_step.py, the identical
// architecture in torch.nn): channels 32/64/128, GroupNorm(8), SiLU, sinusoidal time embedding,
// self-attention at 8×8, 1,131,683 parameters; batch [16, 3, 32, 32], MSE to a target, backward,
// AdamW(0.9, 0.999, wd 1e-2) step. Both print their parameter count; the case fails if they differ.
import type { BenchCase } from "../types.js";
import {
  Generator, arange, attention, cat, interpolateNearest, keep, mseLoss, noGrad, randint, randn, setNumThreads, tidy,
  type Tensor,
} from "../../src/tensor/index.js";
import { Conv2d, GroupNorm, Linear, Module, setInitSeed } from "../../src/nn/index.js";
import { AdamW } from "../../src/optim/index.js";
import { TorchWorker, alternate, peakGflops, ratioResult, timeCalls } from "./engine.js";

const TEMB = 128;
const GROUPS = 8;

/** Multiply-adds ×2 of every conv, linear and attention matmul in one forward (set while counting). */
let flopCounter: { flops: number } | null = null;
const count = (flops: number): void => { if (flopCounter) flopCounter.flops += flops; };

function conv(c: Conv2d, x: Tensor): Tensor {
  const y = c.forward(x);
  const [n, co, h, w] = y.shape as [number, number, number, number];
  count(2 * n * co * h * w * (c.inChannels / c.groups) * c.kernelSize * c.kernelSize);
  return y;
}
function lin(l: Linear, x: Tensor): Tensor {
  count(2 * (x.size / l.inFeatures) * l.inFeatures * l.outFeatures);
  return l.forward(x);
}

class ResBlock extends Module {
  norm1: GroupNorm; conv1: Conv2d; temb: Linear; norm2: GroupNorm; conv2: Conv2d; skip: Conv2d | null;
  constructor(cin: number, cout: number) {
    super();
    this.norm1 = this.child("norm1", new GroupNorm(GROUPS, cin));
    this.conv1 = this.child("conv1", new Conv2d(cin, cout, 3, { padding: 1 }));
    this.temb = this.child("temb", new Linear(TEMB, cout));
    this.norm2 = this.child("norm2", new GroupNorm(GROUPS, cout));
    this.conv2 = this.child("conv2", new Conv2d(cout, cout, 3, { padding: 1 }));
    this.skip = cin !== cout ? this.child("skip", new Conv2d(cin, cout, 1)) : null;
  }
  // Each block runs in its own tidy scope so its intermediates are freed when it returns, as
  // Python's reference counting frees them: memory is then reused while still in cache. Holding
  // every activation to the end of the step costs ~15-20% of a no-grad forward on this CPU.
  // (Safe under autograd: the graph keeps what backward needs.)
  forward(x: Tensor, temb: Tensor): Tensor {
    return tidy(() => {
      let h = conv(this.conv1, this.norm1.forward(x).silu());
      h = h.add(lin(this.temb, temb).unsqueeze(-1).unsqueeze(-1));
      h = conv(this.conv2, this.norm2.forward(h).silu());
      return h.add(this.skip ? conv(this.skip, x) : x);
    });
  }
}

/** Single-head self-attention over the H·W positions. */
class Attention extends Module {
  norm: GroupNorm; q: Linear; k: Linear; v: Linear; out: Linear;
  constructor(readonly channels: number) {
    super();
    this.norm = this.child("norm", new GroupNorm(GROUPS, channels));
    this.q = this.child("q", new Linear(channels, channels));
    this.k = this.child("k", new Linear(channels, channels));
    this.v = this.child("v", new Linear(channels, channels));
    this.out = this.child("out", new Linear(channels, channels));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [n, c, h, w] = x.shape as [number, number, number, number];
      const t = this.norm.forward(x).reshape([n, c, h * w]).transpose(1, 2);
      const a = attention(lin(this.q, t), lin(this.k, t), lin(this.v, t), null, 1 / Math.sqrt(c));
      count(2 * 2 * n * (h * w) * (h * w) * c);
      return x.add(lin(this.out, a).transpose(1, 2).reshape([n, c, h, w]));
    });
  }
}

function timestepEmbedding(t: Tensor, dim = 32): Tensor {
  const half = dim / 2;
  const freqs = arange(half, undefined, 1, { dtype: "f32" }).mul(-Math.log(10000) / half).exp();
  const args = t.to("f32").unsqueeze(1).mul(freqs.unsqueeze(0));
  return cat([args.sin(), args.cos()], -1);
}

export class SmallUNet extends Module {
  time1 = this.child("time1", new Linear(32, TEMB));
  time2 = this.child("time2", new Linear(TEMB, TEMB));
  convIn = this.child("conv_in", new Conv2d(3, 32, 3, { padding: 1 }));
  down0 = this.child("down0", new ResBlock(32, 32));
  downsample0 = this.child("downsample0", new Conv2d(32, 32, 3, { stride: 2, padding: 1 }));
  down1 = this.child("down1", new ResBlock(32, 64));
  downsample1 = this.child("downsample1", new Conv2d(64, 64, 3, { stride: 2, padding: 1 }));
  down2 = this.child("down2", new ResBlock(64, 128));
  down2Attn = this.child("down2_attn", new Attention(128));
  mid = this.child("mid", new ResBlock(128, 128));
  midAttn = this.child("mid_attn", new Attention(128));
  upsample2 = this.child("upsample2", new Conv2d(128, 64, 3, { padding: 1 }));
  up1 = this.child("up1", new ResBlock(64 + 64, 64));
  upsample1 = this.child("upsample1", new Conv2d(64, 64, 3, { padding: 1 }));
  up0 = this.child("up0", new ResBlock(64 + 32, 32));
  normOut = this.child("norm_out", new GroupNorm(GROUPS, 32));
  convOut = this.child("conv_out", new Conv2d(32, 3, 3, { padding: 1 }));

  forward(x: Tensor, t: Tensor): Tensor {
    const temb = lin(this.time2, lin(this.time1, timestepEmbedding(t)).silu());
    let h = conv(this.convIn, x);
    const s0 = this.down0.forward(h, temb);
    h = conv(this.downsample0, s0);
    const s1 = this.down1.forward(h, temb);
    h = conv(this.downsample1, s1);
    const s2 = this.down2Attn.forward(this.down2.forward(h, temb));
    h = this.midAttn.forward(this.mid.forward(s2, temb));
    h = conv(this.upsample2, interpolateNearest(h, { scale: 2 }));
    h = this.up1.forward(cat([h, s1], 1), temb);
    h = conv(this.upsample1, interpolateNearest(h, { scale: 2 }));
    h = this.up0.forward(cat([h, s0], 1), temb);
    return conv(this.convOut, this.normOut.forward(h).silu());
  }
}

export const unetStepBench: BenchCase = {
  name: "unet-step",
  async run({ quick, threads }) {
    setNumThreads(threads);
    const warmup = quick ? 1 : 3;
    const reps = quick ? 3 : 10;
    const worker = new TorchWorker(threads);
    setInitSeed(0);
    const model = new SmallUNet();
    const opt = new AdamW(model.trainableParameters(), { lr: 1e-4, betas: [0.9, 0.999], weightDecay: 1e-2 });
    const g = new Generator(1);
    const [x, target] = keep([randn([16, 3, 32, 32], g), randn([16, 3, 32, 32], g)]);
    const t = keep(randint(0, 1000, [16], g));
    try {
      const params = model.numParameters();
      let refParams: number | null = null;
      try { refParams = (await worker.call({ op: "unet_params" })).value as number; } catch { /* reported by alternate() */ }
      if (refParams !== null && refParams !== params) {
        throw new Error(`unet-step: the TS model has ${params} parameters but bench/torch/unet_step.py has ${refParams}; keep the two architectures identical`);
      }
      const step = alternate(worker, () => timeCalls(() => tidy(() => {
        opt.zeroGrad();
        const loss = mseLoss(model.forward(x, t), target);
        loss.backward();
        opt.step();
        return loss.item();
      })), "unet_step", 1, warmup, reps);
      const stepTimes = await step;
      // One counted forward for the FLOP total, then the timed no-grad forwards.
      flopCounter = { flops: 0 };
      tidy(() => { noGrad(() => model.forward(x, t)); });
      const forwardFlops = flopCounter.flops;
      flopCounter = null;
      const fwdTimes = await alternate(worker, () => timeCalls(() => tidy(() => { noGrad(() => model.forward(x, t)); })), "unet_forward", 1, 1, reps);
      const peak = peakGflops(threads);
      const counts = `parameters: ours ${params.toLocaleString("en")}, PyTorch ${refParams === null ? "—" : refParams.toLocaleString("en")}`;
      const ms = (s: number | undefined) => (s === undefined ? "—" : `${(s * 1e3).toFixed(0)} ms`);
      const stepResult = ratioResult("UNet training step (1.13M params, [16,3,32,32], AdamW)", "steps/s", stepTimes, {
        note: `${ms(stepTimes.ours)} per step here, ${ms(stepTimes.torch)} in PyTorch; ${counts}; ${(3 * forwardFlops / 1e9).toFixed(2)} GFLOP per step (3× forward)`,
      });
      stepResult.peakFraction = (3 * forwardFlops) / stepTimes.ours / 1e9 / peak;
      const fwdResult = ratioResult("UNet forward, no grad ([16,3,32,32])", "calls/s", fwdTimes, {
        note: `${ms(fwdTimes.ours)} per call here, ${ms(fwdTimes.torch)} in PyTorch; ${(forwardFlops / 1e9).toFixed(2)} GFLOP`,
      });
      fwdResult.peakFraction = forwardFlops / fwdTimes.ours / 1e9 / peak;
      return [stepResult, fwdResult];
    } finally {
      worker.close();
      opt.dispose();
      model.dispose();
      for (const v of [x, target, t]) v.dispose();
    }
  },
};
