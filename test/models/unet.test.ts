import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, randn, tidy, noGrad, liveTensors, tensor } from "../../src/tensor/index.js";
import { setInitSeed } from "../../src/nn/index.js";
import {
  UNet2DConditionModel, TINY_UNET_CONFIG, SD15_UNET_CONFIG, describeParameters, timestepEmbedding,
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

test("SD1.5 config: 686 tensors, 859,520,964 parameters, diffusers shapes (meta build, no allocation)", () => {
  const params = describeParameters(SD15_UNET_CONFIG);
  const byName = new Map(params.map((p) => [p.name, p.shape]));
  assert.equal(params.length, 686);
  assert.equal(params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0), 859_520_964);
  const expect: [string, number[]][] = [
    ["conv_in.weight", [320, 4, 3, 3]],
    ["time_embedding.linear_1.weight", [1280, 320]],
    ["time_embedding.linear_2.weight", [1280, 1280]],
    ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", [320, 768]],
    ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", [320, 320]],
    ["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight", [2560, 320]],
    ["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight", [320, 1280]],
    ["down_blocks.0.attentions.0.proj_in.weight", [320, 320, 1, 1]],
    ["down_blocks.1.resnets.0.conv_shortcut.weight", [640, 320, 1, 1]],
    ["down_blocks.2.downsamplers.0.conv.weight", [1280, 1280, 3, 3]],
    ["down_blocks.3.resnets.1.time_emb_proj.weight", [1280, 1280]],
    ["mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight", [1280, 768]],
    ["mid_block.resnets.1.norm2.weight", [1280]],
    ["up_blocks.0.resnets.0.conv1.weight", [1280, 2560, 3, 3]],
    ["up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_out.0.bias", [1280]],
    ["up_blocks.1.upsamplers.0.conv.weight", [1280, 1280, 3, 3]],
    ["up_blocks.3.resnets.2.conv_shortcut.weight", [320, 640, 1, 1]],
    ["conv_norm_out.weight", [320]],
    ["conv_out.weight", [4, 320, 3, 3]],
  ];
  for (const [name, shape] of expect) assert.deepEqual(byName.get(name), shape, name);
  assert.equal(byName.has("up_blocks.3.upsamplers.0.conv.weight"), false);
  assert.equal(byName.has("down_blocks.3.downsamplers.0.conv.weight"), false);
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
