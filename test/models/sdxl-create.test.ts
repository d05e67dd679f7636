// A freshly built SDXL-style model (createTextToImageModel with textEncoder2): the component checks,
// and a save → load round trip that reproduces every output bit for bit.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTextToImageModel, disposeTextToImageModel, encodePrompts, loadModelFolder, saveModelFolder, type TextToImageModel } from "../../src/models/pipeline.js";
import { TINY_CLIP_TEXT_CONFIG } from "../../src/models/clip/text-model.js";
import { TINY_AUTOENCODER_KL_CONFIG } from "../../src/models/vae/autoencoder-kl.js";
import { TINY_UNET_CONFIG } from "../../src/models/unet/config.js";
import { setInitSeed } from "../../src/nn/index.js";
import { Generator, noGrad, randn, tidy } from "../../src/tensor/index.js";

const text1 = { ...TINY_CLIP_TEXT_CONFIG, hiddenSize: 32, projectionDim: 32 };
const text2 = { ...TINY_CLIP_TEXT_CONFIG, hiddenSize: 32, projectionDim: 16, hiddenAct: "gelu" as const };
const unet = {
  ...TINY_UNET_CONFIG, inChannels: 4, outChannels: 4, crossAttentionDim: 64, useLinearProjection: true,
  additionEmbedType: "text_time" as const, additionTimeEmbedDim: 8, projectionClassEmbeddingsInputDim: 16 + 6 * 8,
};

function outputs(m: TextToImageModel): number[] {
  return tidy(() => noGrad(() => {
    const c = encodePrompts(m, ["a red circle", ""], { size: 32 });
    return Array.from(m.unet.forward(randn([2, 4, 8, 8], new Generator(1)), 500, c).toFloat32Array());
  }));
}

test("createTextToImageModel builds an SDXL-style model that saves and reloads to the same outputs", () => {
  setInitSeed(0);
  const m = createTextToImageModel({ unet, textEncoder: text1, textEncoder2: text2, vae: TINY_AUTOENCODER_KL_CONFIG });
  const dir = mkdtempSync(join(tmpdir(), "dpo-sdxl-create-"));
  try {
    assert.equal(m.tokenizer2!.padId, 0);
    saveModelFolder(join(dir, "m"), m);
    assert.equal(JSON.parse(readFileSync(join(dir, "m", "model_index.json"), "utf8"))._class_name, "StableDiffusionXLPipeline");
    const back = loadModelFolder(join(dir, "m"));
    try {
      assert.deepEqual(outputs(back), outputs(m));
    } finally {
      disposeTextToImageModel(back);
    }
  } finally {
    disposeTextToImageModel(m);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("mismatched SDXL parts are refused with the reason", () => {
  assert.throws(() => createTextToImageModel({ unet, textEncoder: text1 }), /addition_embed_type "text_time" \(SDXL\) but there is no text_encoder_2/);
  assert.throws(() => createTextToImageModel({ unet: { ...unet, additionEmbedType: null }, textEncoder: text1, textEncoder2: text2 }),
    /there is a text_encoder_2 but the UNet has no addition_embed_type "text_time"/);
  assert.throws(() => createTextToImageModel({ unet: { ...unet, crossAttentionDim: 48 }, textEncoder: text1, textEncoder2: text2 }),
    /hidden sizes 32 \+ 32 = 64 does not match the UNet's cross_attention_dim 48/);
  assert.throws(() => createTextToImageModel({ unet: { ...unet, projectionClassEmbeddingsInputDim: 60 }, textEncoder: text1, textEncoder2: text2 }),
    /projection_class_embeddings_input_dim is 60, but text_encoder_2's projection_dim 16 \+ 6 time ids × addition_time_embed_dim 8 = 64/);
});
