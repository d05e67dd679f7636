import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Generator, randn, noGrad, tidy, tensor } from "../../src/tensor/index.js";
import { setInitSeed } from "../../src/nn/index.js";
import { readSafetensorsSync, writeSafetensorsSync } from "../../src/io/safetensors.js";
import {
  parseUNetConfig, resolveBlocks, resolveUNetConfig, toDiffusersConfig, SD15_UNET_CONFIG, TINY_UNET_CONFIG,
  UNetConfigError, UNet2DConditionModel, DIFFUSERS_UNET_DEFAULTS,
} from "../../src/models/unet/index.js";

const sd15Json = JSON.parse(readFileSync("test/golden/models/unet_sd15_config.json", "utf8")) as Record<string, unknown>;

test("SD1.5's unet/config.json parses to SD15_UNET_CONFIG with nothing ignored", () => {
  const { config, ignoredKeys } = parseUNetConfig(sd15Json);
  assert.deepEqual(config, SD15_UNET_CONFIG);
  assert.deepEqual(ignoredKeys, []);
  const r = resolveBlocks(config);
  assert.deepEqual(r.numHeads, [8, 8, 8, 8]); // attention_head_dim is the head count
  assert.equal(r.timeEmbedDim, 1280);
  // Written back in diffusers' spelling, it reads the same.
  const back = toDiffusersConfig(config);
  assert.equal(back["cross_attention_dim"], 768);
  assert.equal(back["_class_name"], "UNet2DConditionModel");
  assert.deepEqual(parseUNetConfig(JSON.parse(JSON.stringify(back))).config, config);
});

test("a config saved by a recent diffusers (every key, defaults) parses; unknown keys are reported", () => {
  const full = {
    ...sd15Json, _diffusers_version: "0.30.0", _name_or_path: "x",
    addition_embed_type: null, addition_embed_type_num_heads: 64, addition_time_embed_dim: null, attention_type: "default",
    class_embed_type: null, class_embeddings_concat: false, conv_in_kernel: 3, conv_out_kernel: 3, cross_attention_norm: null,
    dropout: 0.0, dual_cross_attention: false, encoder_hid_dim: null, encoder_hid_dim_type: null,
    mid_block_only_cross_attention: null, mid_block_type: "UNetMidBlock2DCrossAttn", num_attention_heads: null,
    num_class_embeds: null, only_cross_attention: false, projection_class_embeddings_input_dim: null,
    resnet_out_scale_factor: 1.0, resnet_skip_time_act: false, resnet_time_scale_shift: "default",
    reverse_transformer_layers_per_block: null, time_cond_proj_dim: null, time_embedding_act_fn: null,
    time_embedding_dim: null, time_embedding_type: "positional", timestep_post_act: null,
    transformer_layers_per_block: 1, upcast_attention: false, use_linear_projection: false,
    some_future_option: 3,
  };
  const { config, ignoredKeys } = parseUNetConfig(full);
  assert.deepEqual(config, SD15_UNET_CONFIG);
  assert.deepEqual(ignoredKeys, ["some_future_option"]);
});

test("SD2.1's config (per-block heads, linear projections, upcast attention)", () => {
  const sd21 = {
    ...sd15Json, attention_head_dim: [5, 10, 20, 20], cross_attention_dim: 1024, use_linear_projection: true,
    upcast_attention: true, sample_size: 96,
  };
  const { config } = parseUNetConfig(sd21);
  assert.deepEqual(resolveBlocks(config).numHeads, [5, 10, 20, 20]); // 64-channel heads everywhere
  assert.equal(config.useLinearProjection, true);
  // The same layout at a small width (16-channel heads) builds and runs.
  const small = resolveUNetConfig({ ...config, blockOutChannels: [16, 32, 64, 64], attentionHeadDim: [1, 2, 4, 4], normNumGroups: 8, crossAttentionDim: 24, layersPerBlock: 1 });
  const unet = new UNet2DConditionModel(small);
  const names = new Map(unet.namedParameters().map(([n, p]) => [n, p.shape]));
  assert.deepEqual(names.get("down_blocks.0.attentions.0.proj_in.weight"), [16, 16]); // Linear, not 1×1 conv
  noGrad(() => tidy(() => {
    const y = unet.forward(randn([1, 4, 16, 16], new Generator(0)), 10, randn([1, 3, 24], new Generator(1)));
    assert.deepEqual(y.shape, [1, 4, 16, 16]);
  }));
  unet.dispose();
});

test("unsupported or invalid values are errors naming the key", () => {
  const bad = (patch: Record<string, unknown>, re: RegExp) =>
    assert.throws(() => parseUNetConfig({ ...sd15Json, ...patch }, "unet/config.json"), (e: unknown) => e instanceof UNetConfigError && re.test((e as Error).message));
  bad({ addition_embed_type: "text_time" }, /unet\/config\.json: "addition_time_embed_dim" must be set when addition_embed_type is "text_time"/);
  bad({ addition_embed_type: "text_time", addition_time_embed_dim: 256 }, /"projection_class_embeddings_input_dim" must be set/);
  bad({ addition_embed_type: "image" }, /"addition_embed_type" is "image"; supported: "text_time"/);
  bad({ class_embed_type: "timestep" }, /"class_embed_type"/);
  bad({ resnet_time_scale_shift: "scale_shift" }, /"resnet_time_scale_shift"/);
  bad({ act_fn: "gelu" }, /"act_fn" is "gelu"; only "silu"/);
  bad({ down_block_types: ["CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"] }, /"down_block_types" contains "SimpleCrossAttnDownBlock2D"/);
  bad({ mid_block_type: "UNetMidBlock2DSimpleCrossAttn" }, /"mid_block_type"/);
  bad({ up_block_types: ["UpBlock2D"] }, /"up_block_types" must list one block per entry of block_out_channels \(4\)/);
  bad({ layers_per_block: [2, 2] }, /"layers_per_block" has 2 entries but there are 4 blocks/);
  bad({ norm_num_groups: 48 }, /"norm_num_groups" \(48\) must divide every block_out_channels entry; 320 is not divisible/);
  bad({ attention_head_dim: 3 }, /"attention_head_dim" \(3 heads\) must divide the block's 320 channels/);
  bad({ in_channels: 0 }, /"in_channels" must be a positive integer, got 0/);
  bad({ conv_in_kernel: 4 }, /"conv_in_kernel" must be odd/);
  bad({ dropout: 0.1 }, /"dropout" is 0\.1; only 0/);
  bad({ _class_name: "UNet2DModel" }, /_class_name is "UNet2DModel"/);
  assert.throws(() => parseUNetConfig([1, 2]), /expected a JSON object/);
});

test("defaults are diffusers' constructor defaults", () => {
  const { config } = parseUNetConfig({});
  assert.deepEqual(config, DIFFUSERS_UNET_DEFAULTS);
  assert.equal(config.crossAttentionDim, 1280);
  assert.deepEqual(config.blockOutChannels, [320, 640, 1280, 1280]);
});

test("state dict → safetensors → fresh model: identical outputs; missing / unexpected weights are listed", () => {
  const dir = mkdtempSync(join(tmpdir(), "unet-rt-"));
  try {
    setInitSeed(1);
    const cfg = { ...TINY_UNET_CONFIG, blockOutChannels: [16, 32, 32], crossAttentionDim: 32, attentionHeadDim: 2 };
    const a = new UNet2DConditionModel(cfg);
    const path = join(dir, "diffusion_pytorch_model.safetensors");
    writeSafetensorsSync(path, a.stateDict());
    setInitSeed(2);
    const b = new UNet2DConditionModel(cfg);
    const x = randn([1, 3, 8, 8], new Generator(3));
    const ctx = randn([1, 2, 32], new Generator(4));
    const t = tensor([250]);
    const ya = noGrad(() => a.forward(x, t, ctx));
    assert.ok(noGrad(() => b.forward(x, t, ctx)).sub(ya).abs().amax().item() > 1e-3, "different seeds differ");
    const { tensors } = readSafetensorsSync(path);
    b.loadStateDict(tensors, { source: path });
    assert.equal(noGrad(() => b.forward(x, t, ctx)).sub(ya).abs().amax().item(), 0);

    const missing = new Map(tensors);
    missing.delete("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    missing.set("mid_block.attentions.0.transformer_blocks.0.attn2.to_kk.weight", tensors.get("conv_in.weight")!);
    assert.throws(() => b.loadStateDict(missing, { source: path }), (e: unknown) => {
      const m = (e as Error).message;
      return m.includes(path) && m.includes("missing weights: mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")
        && m.includes("unexpected weights: mid_block.attentions.0.transformer_blocks.0.attn2.to_kk.weight");
    });
    const wrongShape = new Map(tensors);
    wrongShape.set("conv_out.weight", randn([4, 16, 3, 3], new Generator(0)));
    assert.throws(() => b.loadStateDict(wrongShape), /"conv_out\.weight" has shape \[4, ?16, ?3, ?3\] but the model expects \[3, ?16, ?3, ?3\]/);
    a.dispose();
    b.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
