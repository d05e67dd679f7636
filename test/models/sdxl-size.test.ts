// The SDXL UNet's parameter layout without allocating it (libtorch's meta device), checked against
// independent counts: diffusers' num_parameters of the tiny SDXL reference UNet (case.json), and
// the published size of stabilityai/stable-diffusion-xl-base-1.0's UNet, 2,567,463,684 values in
// 1,680 tensors (its diffusion_pytorch_model.safetensors). scripts/sdxl/sdxl-size.ts prints the
// README's memory figures from the same config.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REFERENCE_MODELS_DIR } from "../_reference.js";
import { describeParameters, parseUNetConfig } from "../../src/models/unet/index.js";
import { SDXL_BASE_UNET_JSON, sdxlSize } from "../../scripts/sdxl/sdxl-size.js";

const count = (list: { shape: number[] }[]) => list.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);

test("the tiny SDXL reference UNet has diffusers' parameter count", () => {
  const dir = join(REFERENCE_MODELS_DIR, "sdxl-pipeline");
  const caseJson = JSON.parse(readFileSync(join(dir, "case.json"), "utf8"));
  const { config } = parseUNetConfig(JSON.parse(readFileSync(join(dir, "pipeline", "unet", "config.json"), "utf8")));
  assert.equal(count(describeParameters(config)), caseJson.components.unet.num_parameters); // 1,937,604
});

test("SDXL base's UNet: 1,680 tensors, 2,567,463,684 parameters; add_embedding takes 2816 = 1280 + 6 × 256", () => {
  const { config } = parseUNetConfig(SDXL_BASE_UNET_JSON);
  const params = describeParameters(config);
  assert.equal(params.length, 1680);
  assert.equal(count(params), 2_567_463_684);
  const shapes = new Map(params.map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get("add_embedding.linear_1.weight"), [1280, 2816]);
  assert.deepEqual(shapes.get("down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight"), [1280, 2048]);
});

test("SDXL base's frozen encoders: CLIP ViT-L 123,060,480, OpenCLIP bigG with projection 694,659,840, VAE 83,653,863", () => {
  const s = sdxlSize() as { frozenEncoders: { textEncoder: number; textEncoder2: number; vae: number } };
  assert.deepEqual([s.frozenEncoders.textEncoder, s.frozenEncoders.textEncoder2, s.frozenEncoders.vae], [123_060_480, 694_659_840, 83_653_863]);
});
