import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, randn, tidy, noGrad, liveTensors, tensor } from "../../src/tensor/index.js";
import { setInitSeed } from "../../src/nn/index.js";
import {
  UNet2DConditionModel, TINY_UNET_CONFIG, timestepEmbedding, setAttentionSlice,
} from "../../src/models/unet/index.js";

test("tiny UNet: forward keeps the input shape, backward reaches every parameter", () => {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(TINY_UNET_CONFIG);
  const g = new Generator(3);
  tidy(() => {
    const x = randn([2, 3, 32, 32], g);
    const ctx = randn([2, 5, 64], g);
    const y = unet.forward(x, tensor([10, 900], [2], { dtype: "i64" }), ctx);
    assert.deepEqual(y.shape, [2, 3, 32, 32]);
    assert.ok(y.isFinite().all().item() === 1);
    y.square().mean().backward();
    const missing = unet.namedParameters().filter(([, p]) => {
      const gr = p.grad;
      return gr === null || gr.abs().sum().item() === 0;
    }).map(([n]) => n);
    assert.deepEqual(missing, []);
  });
  unet.zeroGrad();
  unet.dispose();
});

test("UNet handles sizes that are not a multiple of the downsampling factor, and scalar timesteps", () => {
  setInitSeed(1);
  const unet = new UNet2DConditionModel({ ...TINY_UNET_CONFIG, blockOutChannels: [16, 16, 16], normNumGroups: 4 });
  const g = new Generator(4);
  const before = liveTensors();
  noGrad(() => tidy(() => {
    const y = unet.forward(randn([1, 3, 10, 14], g), 7, randn([1, 3, 64], g));
    assert.deepEqual(y.shape, [1, 3, 10, 14]);
    const a = unet.forward(randn([2, 3, 8, 8], new Generator(5)), 7, randn([2, 3, 64], new Generator(6)));
    const b = unet.forward(randn([2, 3, 8, 8], new Generator(5)), tensor([7, 7]), randn([2, 3, 64], new Generator(6)));
    assert.equal(a.sub(b).abs().amax().item(), 0);
  }));
  assert.equal(liveTensors(), before);
  unet.dispose();
});

test("UNet rejects inputs of the wrong shape with a message naming the expected one", () => {
  const unet = new UNet2DConditionModel({ ...TINY_UNET_CONFIG, blockOutChannels: [8, 8, 8], normNumGroups: 4, attentionHeadDim: 2 });
  const g = new Generator(0);
  assert.throws(() => unet.forward(randn([1, 4, 8, 8], g), 1, randn([1, 2, 64], g)), /\[N, 3, H, W\]/);
  assert.throws(() => unet.forward(randn([1, 3, 8, 8], g), 1, randn([2, 2, 64], g)), /encoderHiddenStates must be \[1, L, D\]/);
  unet.dispose();
});

test("timestep embedding: closed form (sin/cos of t·exp(−ln(10⁴)·i/(half−shift)))", () => {
  const t = [0, 1, 37, 999];
  for (const [flip, shift] of [[true, 0], [false, 1]] as const) {
    const emb = timestepEmbedding(tensor(t), 8, { flipSinToCos: flip, freqShift: shift }).toArray();
    for (let r = 0; r < t.length; r++) {
      for (let i = 0; i < 4; i++) {
        const f = Math.exp((-Math.log(10000) * i) / (4 - shift));
        const [s, c] = [Math.sin(t[r]! * f), Math.cos(t[r]! * f)];
        const [first, second] = flip ? [c, s] : [s, c];
        assert.ok(Math.abs(emb[r * 8 + i]! - first) < 2e-4, `row ${r} col ${i}`);
        assert.ok(Math.abs(emb[r * 8 + 4 + i]! - second) < 2e-4, `row ${r} col ${4 + i}`);
      }
    }
  }
});

test("attention slicing gives the same output and gradients", () => {
  setInitSeed(2);
  const unet = new UNet2DConditionModel({
    ...TINY_UNET_CONFIG, blockOutChannels: [8, 8, 8], normNumGroups: 4, attentionHeadDim: 2,
    downBlockTypes: ["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"], upBlockTypes: ["UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"],
  });
  const g = new Generator(9);
  const x = randn([1, 3, 12, 12], g);
  const ctx = randn([1, 3, 64], g);
  const w = unet.down_blocks.at(0).attentions!.at(0).transformer_blocks.at(0).attn1.to_q.namedParameters()[0]![1];
  const run = () => tidy(() => {
    const y = unet.forward(x, 40, ctx);
    y.square().mean().backward();
    const grad = w.grad!.clone();
    unet.zeroGrad();
    return { y, grad };
  });
  const full = run();
  setAttentionSlice(unet, 50); // 144 tokens → slices of 50, 50, 44
  const sliced = run();
  assert.ok(full.y.sub(sliced.y).abs().amax().item() < 1e-6);
  assert.ok(full.grad.sub(sliced.grad).abs().amax().item() < 1e-6);
  assert.throws(() => setAttentionSlice(unet, 0), /positive integer or null/);
  unet.dispose();
});
