// UNet name tables (src/models/convert/unet-names.ts): every diffusers parameter maps to exactly
// one original-SD / SGM name and back, on the real SD1.5 / SD2.1 configs (parameter lists from the
// meta device), the real SDXL base layout, and the tiny reference folders' safetensors headers.
// Spot checks use names and shapes of the public original checkpoints (v1-5-pruned, sd_xl_base_1.0).
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { SafetensorsFile } from "../../../src/io/safetensors.js";
import { describeParameters, parseUNetConfig, SD15_UNET_CONFIG, toDiffusersConfig, type UNetConfig } from "../../../src/models/unet/index.js";
import { NameTableError, unetLayoutFromConfig, unetNameTable, UNetNameMapper } from "../../../src/models/convert/unet-names.js";
import { REFERENCE_MODELS_DIR } from "../../_reference.js";

function checkBijection(names: string[], config: Record<string, unknown>) {
  const table = unetNameTable(unetLayoutFromConfig(config), names);
  assert.equal(table.toOriginal.size, names.length);
  assert.equal(new Set(table.toOriginal.values()).size, names.length, "no two names share an original name");
  for (const n of names) assert.equal(table.toDiffusers.get(table.toOriginal.get(n)!), n);
  return table;
}

function headerShapes(file: string): Map<string, number[]> {
  const f = SafetensorsFile.open(file);
  try {
    return new Map(f.keys().map((k) => [k, f.info(k).shape]));
  } finally {
    f.close();
  }
}

test("SD1.5 (real config, meta device): 686 UNet tensors map one-to-one to original names and back", () => {
  const params = describeParameters(SD15_UNET_CONFIG);
  assert.equal(params.length, 686);
  const table = checkBijection(params.map((p) => p.name), toDiffusersConfig(SD15_UNET_CONFIG));
  const shapeOf = new Map(params.map((p) => [table.toOriginal.get(p.name)!, p.shape]));
  // names and shapes of runwayml v1-5-pruned.safetensors' model.diffusion_model.* keys
  const known: [string, number[]][] = [
    ["input_blocks.0.0.weight", [320, 4, 3, 3]],
    ["time_embed.0.weight", [1280, 320]],
    ["time_embed.2.weight", [1280, 1280]],
    ["input_blocks.1.1.proj_in.weight", [320, 320, 1, 1]],
    ["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", [320, 768]],
    ["input_blocks.3.0.op.weight", [320, 320, 3, 3]],
    ["input_blocks.4.0.skip_connection.weight", [640, 320, 1, 1]],
    ["input_blocks.4.0.in_layers.0.weight", [320]],
    ["input_blocks.4.0.emb_layers.1.weight", [640, 1280]],
    ["input_blocks.9.0.op.weight", [1280, 1280, 3, 3]],
    ["input_blocks.11.0.out_layers.3.weight", [1280, 1280, 3, 3]],
    ["middle_block.1.transformer_blocks.0.attn2.to_k.weight", [1280, 768]],
    ["middle_block.2.in_layers.2.weight", [1280, 1280, 3, 3]],
    ["output_blocks.0.0.skip_connection.weight", [1280, 2560, 1, 1]],
    ["output_blocks.2.1.conv.weight", [1280, 1280, 3, 3]],
    ["output_blocks.3.1.proj_out.weight", [1280, 1280, 1, 1]],
    ["output_blocks.5.2.conv.weight", [1280, 1280, 3, 3]],
    ["output_blocks.8.2.conv.weight", [640, 640, 3, 3]],
    ["output_blocks.11.1.transformer_blocks.0.ff.net.2.weight", [320, 1280]],
    ["output_blocks.11.0.skip_connection.weight", [320, 640, 1, 1]],
    ["out.0.weight", [320]],
    ["out.2.weight", [4, 320, 3, 3]],
  ];
  for (const [name, shape] of known) assert.deepEqual(shapeOf.get(name), shape, name);
});

test("SD2.1 (real config, linear projections): 686 tensors, same block numbering", () => {
  const sd21: Partial<UNetConfig> = { ...SD15_UNET_CONFIG, crossAttentionDim: 1024, attentionHeadDim: [5, 10, 20, 20], useLinearProjection: true, sampleSize: 96 };
  const params = describeParameters(sd21);
  assert.equal(params.length, 686);
  const table = checkBijection(params.map((p) => p.name), toDiffusersConfig({ ...SD15_UNET_CONFIG, ...sd21 } as UNetConfig));
  const shape = new Map(params.map((p) => [table.toOriginal.get(p.name)!, p.shape]));
  assert.deepEqual(shape.get("input_blocks.1.1.proj_in.weight"), [320, 320]); // linear in SD2 (v2-1_768-ema-pruned)
  assert.deepEqual(shape.get("middle_block.1.transformer_blocks.0.attn2.to_k.weight"), [1280, 1024]);
});

// SDXL base 1.0's unet/config.json (stabilityai/stable-diffusion-xl-base-1.0), by hand
const SDXL_BASE_UNET_JSON = {
  act_fn: "silu", addition_embed_type: "text_time", addition_embed_type_num_heads: 64, addition_time_embed_dim: 256,
  attention_head_dim: [5, 10, 20], block_out_channels: [320, 640, 1280], center_input_sample: false, class_embed_type: null,
  class_embeddings_concat: false, conv_in_kernel: 3, conv_out_kernel: 3, cross_attention_dim: 2048, cross_attention_norm: null,
  down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], downsample_padding: 1, dual_cross_attention: false,
  encoder_hid_dim: null, encoder_hid_dim_type: null, flip_sin_to_cos: true, freq_shift: 0, in_channels: 4, layers_per_block: 2,
  mid_block_only_cross_attention: null, mid_block_scale_factor: 1, mid_block_type: "UNetMidBlock2DCrossAttn", norm_eps: 1e-5,
  norm_num_groups: 32, num_attention_heads: null, num_class_embeds: null, only_cross_attention: false, out_channels: 4,
  projection_class_embeddings_input_dim: 2816, resnet_out_scale_factor: 1.0, resnet_skip_time_act: false,
  resnet_time_scale_shift: "default", sample_size: 128, time_cond_proj_dim: null, time_embedding_act_fn: null,
  time_embedding_dim: null, time_embedding_type: "positional", timestep_post_act: null, transformer_layers_per_block: [1, 2, 10],
  up_block_types: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], upcast_attention: false, use_linear_projection: true,
};

test("SDXL base (real config, meta device): 1680 UNet tensors map one-to-one; SGM names of sd_xl_base_1.0", () => {
  const params = describeParameters(parseUNetConfig(SDXL_BASE_UNET_JSON).config);
  assert.equal(params.length, 1680);
  const table = checkBijection(params.map((p) => p.name), SDXL_BASE_UNET_JSON);
  const shape = new Map(params.map((p) => [table.toOriginal.get(p.name)!, p.shape]));
  const known: [string, number[]][] = [
    ["label_emb.0.0.weight", [1280, 2816]],
    ["label_emb.0.2.weight", [1280, 1280]],
    ["input_blocks.3.0.op.weight", [320, 320, 3, 3]],
    ["input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight", [640, 640]],
    ["input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight", [1280, 2048]],
    ["middle_block.1.transformer_blocks.9.ff.net.0.proj.weight", [10240, 1280]],
    ["output_blocks.2.2.conv.weight", [1280, 1280, 3, 3]], // the upsampler after a transformer: sub-index 2
    ["output_blocks.5.2.conv.weight", [640, 640, 3, 3]],
    ["output_blocks.8.0.skip_connection.weight", [320, 640, 1, 1]],
    ["out.2.weight", [4, 320, 3, 3]],
  ];
  for (const [name, s] of known) assert.deepEqual(shape.get(name), s, name);
  assert.equal(shape.has("input_blocks.1.1.proj_in.weight"), false, "SDXL's first level has no attention");
});

test("tiny reference folders: every UNet tensor of sd15-pipeline and sdxl-pipeline maps and back", () => {
  for (const [name, expected] of [["sd15-pipeline", 0], ["sdxl-pipeline", 428]] as const) {
    const dir = join(REFERENCE_MODELS_DIR, name, "pipeline", "unet");
    const shapes = headerShapes(join(dir, "diffusion_pytorch_model.safetensors"));
    if (expected > 0) assert.equal(shapes.size, expected);
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    const table = checkBijection([...shapes.keys()], config);
    if (name === "sdxl-pipeline") {
      assert.ok(table.toDiffusers.has("output_blocks.2.2.conv.weight"));
      assert.ok(table.toDiffusers.has("label_emb.0.0.weight"));
      assert.ok(table.toDiffusers.has("input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight"));
    } else {
      assert.ok(table.toDiffusers.has("output_blocks.2.1.transformer_blocks.0.attn1.to_q.weight"));
    }
  }
});

test("names outside the layout and unknown block types are errors that name them", () => {
  const layout = unetLayoutFromConfig(toDiffusersConfig(SD15_UNET_CONFIG));
  assert.throws(() => unetNameTable(layout, ["down_blocks.3.attentions.0.proj_in.weight", "class_embedding.linear_1.weight"]),
    (e: Error) => e instanceof NameTableError && /down_blocks\.3\.attentions\.0\.proj_in\.weight/.test(e.message) && /class_embedding/.test(e.message));
  assert.throws(() => unetLayoutFromConfig({ down_block_types: ["SimpleCrossAttnDownBlock2D"], up_block_types: ["UpBlock2D"] }), /SimpleCrossAttnDownBlock2D/);
  const m = new UNetNameMapper(layout);
  assert.equal(m.toOriginal("down_blocks.0.resnets.0.bogus.weight"), null);
  assert.equal(m.toDiffusers("input_blocks.1.0.in_layers.0.weight"), "down_blocks.0.resnets.0.norm1.weight");
});
