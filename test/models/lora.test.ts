import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, randn, tidy, noGrad, tensor, matmul, type Tensor } from "../../src/tensor/index.js";
import { Linear, setInitSeed } from "../../src/nn/index.js";
import {
  LoraLinear, injectLora, loraLayers, setLoraEnabled, withLoraDisabled, loraStateDict, loadLoraStateDict,
  mergeLora, removeLora, normalizeLoraKey, loraConfig, loraMetadata, loraScaleFromMetadata, LORA_ADAPTER_METADATA_KEY,
} from "../../src/nn/lora.js";
import { readSafetensorsSync, writeSafetensorsSync } from "../../src/io/safetensors.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UNet2DConditionModel, TINY_UNET_CONFIG, type UNetConfig } from "../../src/models/unet/index.js";

// SD1.5's block layout (attention at the top resolution) at toy width.
const SMALL: UNetConfig = {
  ...TINY_UNET_CONFIG, blockOutChannels: [16, 32, 32], attentionHeadDim: 2, crossAttentionDim: 32,
  downBlockTypes: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  upBlockTypes: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
};

function inputs(seed: number): { x: Tensor; ctx: Tensor; t: Tensor } {
  const g = new Generator(seed);
  return { x: randn([1, 3, 8, 8], g), ctx: randn([1, 4, 32], g), t: tensor([600]) };
}
const maxDiff = (a: Tensor, b: Tensor) => a.sub(b).abs().amax().item();
/** Gives every B a nonzero value so the adapters matter. */
function perturbB(model: UNet2DConditionModel, seed: number): void {
  const g = new Generator(seed);
  noGrad(() => tidy(() => {
    for (const [, l] of loraLayers(model)) l.lora_B.weight.copy_(randn(l.lora_B.weight.shape, g).mul(0.05));
  }));
}

test("LoraLinear computes xWᵀ + b + (alpha/rank)·x·Aᵀ·Bᵀ", () => {
  setInitSeed(11);
  const base = new Linear(6, 5);
  const lora = new LoraLinear(base, 3, 12);
  assert.equal(lora.scale, 4);
  const g = new Generator(2);
  noGrad(() => lora.lora_B.weight.copy_(randn([5, 3], g)));
  tidy(() => {
    const x = randn([4, 6], g);
    const expected = matmul(x, base.weight.mT).add(base.bias!).add(matmul(matmul(x, lora.lora_A.weight.mT), lora.lora_B.weight.mT).mul(4));
    assert.ok(maxDiff(lora.forward(x), expected) < 1e-5);
  });
  // peft's default init: A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0.
  const a = lora.lora_A.weight.toArray();
  assert.ok(a.every((v) => Math.abs(v) <= 1 / Math.sqrt(6)));
  assert.ok(new Set(a).size === a.length);
  const gauss = new LoraLinear(new Linear(256, 64), 4, 4, "gaussian");
  const std = gauss.lora_A.weight.std().item();
  assert.ok(Math.abs(std - 0.25) < 0.02, `gaussian A std ${std}`);
  assert.equal(gauss.lora_B.weight.abs().sum().item(), 0);
});

test("injectLora: diffusers/peft names, base frozen, fresh adapters change nothing", () => {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(SMALL);
  const baseNames = unet.namedParameters().map(([n]) => n);
  const { x, ctx, t } = inputs(1);
  const before = noGrad(() => unet.forward(x, t, ctx));
  const names = injectLora(unet, { rank: 4, alpha: 8 });
  // 2 attention blocks per transformer (attn1, attn2) × 4 targets × 2 matrices; transformers: down 2, mid 1, up 4.
  assert.equal(names.length, 7 * 2 * 4 * 2);
  const params = new Map(unet.namedParameters().map(([n, p]) => [n, p.shape]));
  assert.deepEqual(params.get("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"), [4, 16]);
  assert.deepEqual(params.get("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight"), [16, 4]);
  assert.deepEqual(params.get("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"), [4, 32]);
  assert.deepEqual(params.get("up_blocks.2.attentions.1.transformer_blocks.0.attn1.to_out.0.lora_B.weight"), [16, 4]);
  // The base names are untouched: a full state dict still has …to_q.weight, …to_out.0.bias.
  for (const n of baseNames) assert.ok(params.has(n), n);
  assert.deepEqual(unet.trainableParameters().map(([n]) => n).sort(), [...names].sort());
  assert.deepEqual(loraConfig(unet), { rank: 4, alpha: 8, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
  const after = noGrad(() => unet.forward(x, t, ctx));
  assert.equal(maxDiff(before, after), 0);
  // Gradients reach the adapters only.
  tidy(() => {
    perturbB(unet, 3);
    unet.forward(x, t, ctx).square().mean().backward();
  });
  for (const [n, p] of unet.namedParameters()) {
    const g = p.grad;
    if (n.includes(".lora_")) assert.ok(g !== null && g.abs().sum().item() > 0, `${n} has no gradient`);
    else assert.equal(g, null, `${n} is frozen but got a gradient`);
  }
  assert.throws(() => injectLora(unet, { rank: 2 }), /already has LoRA adapters/);
  assert.throws(() => injectLora(new UNet2DConditionModel(SMALL), { rank: 2, targets: ["to_qq"] }), /no Linear layer matches the targets \["to_qq"\]/);
  assert.throws(() => injectLora(new UNet2DConditionModel(SMALL), { rank: 2, targets: ["to_q", "proj_in"] }), /target "down_blocks\.0\.attentions\.0\.proj_in" is a Conv2d; LoRA here wraps Linear layers only/);
});

test("disabled adapters give exactly the base network (the DPO reference), enabled ones do not", () => {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(SMALL);
  const { x, ctx, t } = inputs(2);
  const base = noGrad(() => unet.forward(x, t, ctx));
  injectLora(unet, { rank: 2, alpha: 4, targets: ["to_q", "to_v"] });
  perturbB(unet, 4);
  noGrad(() => tidy(() => {
    const tuned = unet.forward(x, t, ctx);
    assert.ok(maxDiff(tuned, base) > 1e-4);
    const ref = withLoraDisabled(unet, () => unet.forward(x, t, ctx));
    assert.equal(maxDiff(ref, base), 0);
    assert.equal(maxDiff(unet.forward(x, t, ctx), tuned), 0, "withLoraDisabled restores the adapters");
    setLoraEnabled(unet, false);
    assert.equal(maxDiff(unet.forward(x, t, ctx), base), 0);
    setLoraEnabled(unet, true);
    assert.equal(maxDiff(unet.forward(x, t, ctx), tuned), 0);
  }));
});

test("save → load round trip in peft and diffusers naming (auto-injects into a fresh model)", () => {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(SMALL);
  injectLora(unet, { rank: 3, alpha: 6 });
  perturbB(unet, 5);
  const { x, ctx, t } = inputs(3);
  const expected = noGrad(() => unet.forward(x, t, ctx));

  const peft = loraStateDict(unet);
  assert.ok(peft.has("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"));
  const diffusers = loraStateDict(unet, { format: "diffusers" });
  assert.ok(diffusers.has("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight"));
  assert.ok(diffusers.has("unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.lora.up.weight"));
  assert.equal(diffusers.size, peft.size);

  for (const state of [peft, diffusers]) {
    setInitSeed(0);
    const fresh = new UNet2DConditionModel(SMALL);
    // Copies, as a file would give.
    const copied = new Map([...state].map(([k, v]) => [k, v.clone()]));
    loadLoraStateDict(fresh, copied, { alpha: 6 });
    assert.deepEqual(loraConfig(fresh), { rank: 3, alpha: 6, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
    assert.equal(maxDiff(noGrad(() => fresh.forward(x, t, ctx)), expected), 0);
    fresh.dispose();
  }
  // Loading into an existing adapter set works too; mismatches are listed.
  loadLoraStateDict(unet, peft);
  const partial = new Map([...peft].slice(2));
  assert.throws(() => loadLoraStateDict(unet, partial), /missing: down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn1\.to_q\.lora_A\.weight/);
  const extra = new Map([...peft, ["conv_in.lora_A.weight", peft.values().next().value!] as [string, Tensor]]);
  assert.throws(() => loadLoraStateDict(unet, extra), /unexpected: conv_in\.lora_A\.weight/);
  assert.throws(() => loadLoraStateDict(unet, new Map([["conv_in.weight", unet.conv_in.weight]])), /not LoRA adapter weights: conv_in\.weight/);
  const small = new UNet2DConditionModel(SMALL);
  injectLora(small, { rank: 2 });
  assert.throws(() => loadLoraStateDict(small, peft, { source: "x.safetensors" }), /in x\.safetensors has shape \[3, 16\] but the adapter expects \[2, 16\]/);
});

test("normalizeLoraKey reads peft, diffusers and the old attention-processor format", () => {
  const p = "down_blocks.1.attentions.0.transformer_blocks.0.attn2";
  assert.equal(normalizeLoraKey(`unet.${p}.to_k.lora.down.weight`), `${p}.to_k.lora_A.weight`);
  assert.equal(normalizeLoraKey(`unet.${p}.to_out.0.lora.up.weight`), `${p}.to_out.0.lora_B.weight`);
  assert.equal(normalizeLoraKey(`base_model.model.${p}.to_v.lora_A.default.weight`), `${p}.to_v.lora_A.weight`);
  assert.equal(normalizeLoraKey(`${p}.processor.to_q_lora.down.weight`), `${p}.to_q.lora_A.weight`);
  assert.equal(normalizeLoraKey(`unet.${p}.processor.to_out_lora.up.weight`), `${p}.to_out.0.lora_B.weight`);
  assert.equal(normalizeLoraKey(`${p}.to_q.lora_linear_layer.up.weight`), `${p}.to_q.lora_B.weight`);
  assert.equal(normalizeLoraKey(`${p}.to_q.weight`), null);
});

test("mergeLora folds the adapters into the weights: same output, plain Linears again", () => {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(SMALL);
  const names = unet.namedParameters().map(([n]) => n);
  injectLora(unet, { rank: 4, alpha: 2 });
  perturbB(unet, 6);
  const { x, ctx, t } = inputs(4);
  const withAdapters = noGrad(() => unet.forward(x, t, ctx));
  const copy = unet.deepCopy();
  assert.equal(mergeLora(unet), 7 * 2 * 4);
  assert.equal(loraLayers(unet).length, 0);
  assert.deepEqual(unet.namedParameters().map(([n]) => n), names);
  assert.ok(unet.down_blocks.at(0).attentions!.at(0).transformer_blocks.at(0).attn1.to_q instanceof Linear);
  assert.ok(maxDiff(noGrad(() => unet.forward(x, t, ctx)), withAdapters) < 1e-5);
  // The deep copy kept its own adapters; removing them returns the base network.
  assert.equal(maxDiff(noGrad(() => copy.forward(x, t, ctx)), withAdapters), 0);
  const baseOut = withLoraDisabled(copy, () => noGrad(() => copy.forward(x, t, ctx)));
  assert.equal(removeLora(copy), 7 * 2 * 4);
  assert.equal(maxDiff(noGrad(() => copy.forward(x, t, ctx)), baseOut), 0);
});

test("a LoRA training step moves only the adapters", () => {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(SMALL);
  injectLora(unet, { rank: 4, alpha: 4, init: "gaussian" });
  const frozen = new Map(unet.namedParameters().filter(([n]) => !n.includes(".lora_")).map(([n, p]) => [n, p.clone()]));
  const { x, ctx, t } = inputs(5);
  const target = randn([1, 3, 8, 8], new Generator(9));
  const loss = () => noGrad(() => unet.forward(x, t, ctx).sub(target).square().mean().item());
  const l0 = loss();
  for (let step = 0; step < 3; step++) {
    tidy(() => unet.forward(x, t, ctx).sub(target).square().mean().backward());
    noGrad(() => tidy(() => {
      for (const [, p] of unet.trainableParameters()) p.add_(p.grad!, -0.5);
    }));
    unet.zeroGrad();
  }
  assert.ok(loss() < l0, `loss ${loss()} did not fall below ${l0}`);
  for (const [n, p] of unet.namedParameters()) {
    if (!n.includes(".lora_")) assert.equal(maxDiff(p, frozen.get(n)!), 0, `${n} changed`);
  }
});

test("a diffusers-style pytorch_lora_weights.safetensors (unet.… lora.down/up + adapter metadata) round-trips with its scale", () => {
  const dir = mkdtempSync(join(tmpdir(), "lora-st-"));
  try {
    setInitSeed(0);
    const unet = new UNet2DConditionModel(SMALL);
    injectLora(unet, { rank: 4, alpha: 16 });
    perturbB(unet, 7);
    const { x, ctx, t } = inputs(6);
    const expected = noGrad(() => unet.forward(x, t, ctx));
    const path = join(dir, "pytorch_lora_weights.safetensors");
    writeSafetensorsSync(path, loraStateDict(unet, { format: "diffusers" }), loraMetadata(unet));
    const { tensors, metadata } = readSafetensorsSync(path);
    const blob = JSON.parse(metadata[LORA_ADAPTER_METADATA_KEY]!) as Record<string, unknown>;
    assert.equal(blob["unet.r"], 4);
    assert.equal(blob["unet.lora_alpha"], 16);
    assert.deepEqual(blob["unet.target_modules"], ["to_q", "to_k", "to_v", "to_out.0"]);
    const scale = loraScaleFromMetadata(metadata)!;
    assert.deepEqual(scale, { rank: 4, alpha: 16 });
    setInitSeed(0);
    const fresh = new UNet2DConditionModel(SMALL);
    loadLoraStateDict(fresh, tensors, { alpha: scale.alpha, source: path });
    assert.equal(maxDiff(noGrad(() => fresh.forward(x, t, ctx)), expected), 0);
    assert.equal(loraScaleFromMetadata({}), null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("kohya-ss keys (lora_unet_…lora_down/lora_up + per-layer .alpha) load onto the diffusers paths", () => {
  setInitSeed(0);
  const unet = new UNet2DConditionModel(SMALL);
  injectLora(unet, { rank: 2, alpha: 2, targets: ["to_q", "to_out.0"] });
  perturbB(unet, 8);
  // Give one layer its own alpha, as kohya files may.
  const layers = loraLayers(unet);
  const [oddPath, odd] = layers[3]!;
  odd.alpha = 5;
  const { x, ctx, t } = inputs(7);
  const expected = noGrad(() => unet.forward(x, t, ctx));
  const kohya = new Map<string, Tensor>();
  for (const [path, l] of layers) {
    const k = `lora_unet_${path.replace(/\./g, "_")}`;
    kohya.set(`${k}.lora_down.weight`, l.lora_A.weight.clone());
    kohya.set(`${k}.lora_up.weight`, l.lora_B.weight.clone());
    kohya.set(`${k}.alpha`, tensor([l.alpha], []));
  }
  setInitSeed(0);
  const fresh = new UNet2DConditionModel(SMALL);
  loadLoraStateDict(fresh, kohya);
  assert.equal(loraLayers(fresh).find(([p]) => p === oddPath)![1].alpha, 5);
  assert.equal(maxDiff(noGrad(() => fresh.forward(x, t, ctx)), expected), 0);
  const withTe = new Map([...kohya, ["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", tensor([1])] as [string, Tensor]]);
  assert.throws(() => loadLoraStateDict(new UNet2DConditionModel(SMALL), withTe), /lora_te\* keys belong to the text encoder/);
});
