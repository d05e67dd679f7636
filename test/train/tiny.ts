// Test stand-ins: a tiny conditional conv denoiser with the UNet's forward signature, a toy prompt
// encoder, and synthetic preference pairs where the chosen image is systematically brighter.
import assert from "node:assert/strict";
import { Module, Conv2d, Linear, setInitSeed } from "../../src/nn/index.js";
import { Generator, cat, randn, tensor, type Tensor } from "../../src/tensor/index.js";
import type { DenoiserModule } from "../../src/train/dpo-step.js";

export const COND_DIM = 8;

export class TinyDenoiser extends Module implements DenoiserModule {
  conv_in: Conv2d;
  time_proj: Linear;
  cond_proj: Linear;
  conv_out: Conv2d;
  constructor(readonly channels = 3, readonly hidden = 16, seed = 0) {
    super();
    setInitSeed(seed);
    this.conv_in = this.child("conv_in", new Conv2d(channels, hidden, 3, { padding: 1 }));
    this.time_proj = this.child("time_proj", new Linear(1, hidden));
    this.cond_proj = this.child("cond_proj", new Linear(COND_DIM, hidden));
    this.conv_out = this.child("conv_out", new Conv2d(hidden, channels, 3, { padding: 1 }));
  }
  forward(x: Tensor, t: Tensor, cond: Tensor): Tensor {
    const b = x.shape[0]!;
    const h = this.conv_in.forward(x);
    const temb = this.time_proj.forward(t.float().div(1000).unsqueeze(1));
    const c = this.cond_proj.forward(cond.mean(1));
    return this.conv_out.forward(h.add(temb.add(c).reshape([b, this.hidden, 1, 1])).silu());
  }
}

/** Deterministic toy text encoder: [N, 2, COND_DIM] from the prompt's characters ("" → zeros). */
export function encodePrompts(prompts: string[]): Tensor {
  const data = new Float32Array(prompts.length * 2 * COND_DIM);
  prompts.forEach((p, i) => {
    for (let k = 0; k < p.length; k++) {
      const j = i * 2 * COND_DIM + (k % (2 * COND_DIM));
      data[j] = (data[j] ?? 0) + (p.charCodeAt(k) % 17) / 17 - 0.5;
    }
  });
  return tensor(data, [prompts.length, 2, COND_DIM]);
}

/** N pairs of 3×size×size images in [−1, 1]: chosen = base + shift, rejected = base − shift. */
export function brightPairs(n: number, size: number, seed: number, shift = 0.4): { prompts: string[]; chosen: Tensor; rejected: Tensor } {
  const gen = new Generator(seed);
  const base = randn([n, 3, size, size], gen).mul(0.3);
  return {
    prompts: Array.from({ length: n }, (_, i) => `a toy image number ${i}`),
    chosen: base.add(shift).clamp(-1, 1),
    rejected: base.sub(shift).clamp(-1, 1),
  };
}

export function pairBatch(p: { prompts: string[]; chosen: Tensor; rejected: Tensor }, idx: number[]) {
  const index = tensor(new BigInt64Array(idx.map(BigInt)), [idx.length]);
  return {
    prompts: idx.map((i) => p.prompts[i]!),
    pixels: cat([p.chosen.indexSelect(0, index), p.rejected.indexSelect(0, index)], 0),
  };
}

/**
 * A LoRA-shaped stand-in: the TinyDenoiser's weights frozen, plus a zero-initialised low-rank
 * residual (down 1×1 conv to rank r, up 1×1 conv back) that can be switched off.
 */
export class TinyLoraDenoiser extends TinyDenoiser {
  lora_down: Conv2d;
  lora_up: Conv2d;
  loraEnabled = true;
  constructor(seed = 0, rank = 2) {
    super(3, 16, seed);
    this.requiresGrad(false);
    this.lora_down = this.child("lora_down", new Conv2d(16, rank, 1, { bias: false }));
    this.lora_up = this.child("lora_up", new Conv2d(rank, 3, 1, { bias: false }));
    this.lora_up.weight.fill_(0);
  }
  override forward(x: Tensor, t: Tensor, cond: Tensor): Tensor {
    const out = super.forward(x, t, cond);
    if (!this.loraEnabled) return out;
    return out.add(this.lora_up.forward(this.lora_down.forward(this.conv_in.forward(x))));
  }
  adapters() {
    return {
      setEnabled: (on: boolean) => { this.loraEnabled = on; },
      stateDict: () => new Map(this.namedParameters().filter(([n]) => n.startsWith("lora_"))),
    };
  }
}

/** Toy conditioning [N, 3, dim] for UNet tests: the prompt's characters spread over 3 tokens. */
export function toyPromptEncoding(prompts: string[], dim: number): Tensor {
  const data = new Float32Array(prompts.length * 3 * dim);
  prompts.forEach((p, i) => {
    for (let k = 0; k < p.length; k++) data[i * 3 * dim + (k % (3 * dim))] = ((p.charCodeAt(k) % 13) / 13) - 0.5;
  });
  return tensor(data, [prompts.length, 3, dim]);
}

/**
 * No native memory growth over a run: the live tensor count after each step (`live`, from step
 * events) is the same from step 2 to the second-to-last (pipelined steps each hold the next step
 * prepared ahead), and no higher after the last.
 */
export function assertNoTensorGrowth(live: number[]): void {
  assert.ok(live.length >= 3, `need ≥ 3 steps to compare, got ${live.length}`);
  assert.ok(live.slice(1, -1).every((n) => n === live[1]), `live tensors per step: ${live.join(",")}`);
  assert.ok(live[live.length - 1]! <= live[1]!, `live tensors after the last step: ${live[live.length - 1]} vs ${live[1]}`);
}
