// CLIPModel (both towers, projections, logit_scale) and CLIPImageProcessor against the
// clip-reward reference case: transformers 4.44 CLIPModel on tiny random weights, two real emoji PNGs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { ClipModel, clipConfigFromJson, loadClipModel } from "../../src/models/clip/clip-model.js";
import {
  convertToRgb, preprocessImages, readClipImageProcessorConfig, resizeAndCrop, type Uint8Image,
} from "../../src/models/clip/image-processor.js";
import { ClipTokenizer } from "../../src/models/clip/tokenizer.js";
import { getDefaultDevice, noGrad, setDefaultDevice, tensor, tidy } from "../../src/tensor/index.js";
import { assertClose, referenceCase } from "../_reference.js";

const ref = referenceCase("clip-reward");
const values = ref.json.values as { prompts: string[]; logit_scale_exp: number; images: { file: string }[] };

async function loadRgba(file: string): Promise<Uint8Image> {
  const { data, info } = await sharp(join(ref.dir, file)).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 4, data: new Uint8Array(data) };
}

test("clip config: config.json with transformers' defaults filled equals case.json's full effective config", () => {
  const saved = JSON.parse(readFileSync(join(ref.dir, "clip", "config.json"), "utf8"));
  const full = ref.json.components!.clip!.config as Record<string, unknown>;
  const a = clipConfigFromJson(saved);
  const b = clipConfigFromJson(full);
  assert.deepEqual(a, b);
  assert.equal(a.projectionDim, 16);
  assert.equal(a.text.eosTokenId, 49407);
  assert.equal(a.text.vocabSize, 49408);
  assert.equal(a.vision.patchSize, 8);
  assert.equal(a.vision.hiddenAct, "quick_gelu");
});

test("clip image processor: convert_to_rgb, Pillow bicubic resize + crop and normalisation match transformers", async () => {
  const cfg = readClipImageProcessorConfig(join(ref.dir, "clip", "preprocessor_config.json"));
  const images = await Promise.all(values.images.map((im) => loadRgba(im.file)));
  // 1. RGBA → RGB: transformers 4.44 drops alpha (Pillow's convert("RGB")); exact
  const rgbRef = ref.array("image_rgb_uint8");
  images.forEach((img, i) => {
    const rgb = convertToRgb(img);
    const per = rgb.data.length;
    for (let k = 0; k < per; k++) assert.equal(rgb.data[k], rgbRef[i * per + k], `image ${i} rgb byte ${k}`);
  });
  // 2. resize + crop: our Pillow resampler is bit-exact (measured: 0 levels; the task allows 1)
  const rc = ref.array("image_resized_cropped_uint8");
  const plane = 32 * 32;
  let worst = 0;
  images.forEach((img, i) => {
    const r = resizeAndCrop(img, cfg);
    assert.equal(r.width, 32);
    assert.equal(r.height, 32);
    for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(r.data[3 * p + c]! - rc[i * 3 * plane + c * plane + p]!));
  });
  assert.equal(worst, 0, `resized pixels differ from Pillow's by up to ${worst} levels`);
  // sharp's cubic kernel is not Pillow's: measured 6 and 5 levels off on these images (why we resample ourselves)
  let sharpWorst = 0;
  for (const [i, img] of images.entries()) {
    const rgb = convertToRgb(img);
    const s = await sharp(Buffer.from(rgb.data), { raw: { width: 64, height: 64, channels: 3 } }).resize(32, 32, { kernel: "cubic" }).raw().toBuffer();
    for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) sharpWorst = Math.max(sharpWorst, Math.abs(s[3 * p + c]! - rc[i * 3 * plane + c * plane + p]!));
  }
  assert.ok(sharpWorst > 1, `sharp now matches Pillow within ${sharpWorst} level(s); the own resampler could go`);
  // 3. pixel_values: float32 rescale and normalise (measured: bit-exact)
  const pv = preprocessImages(images, cfg);
  assert.deepEqual(pv.shape, [2, 3, 32, 32]);
  const err = assertClose(tensor(pv.data, pv.shape), ref.tensor("pixel_values"), 1e-6, "pixel_values");
  assert.ok(err <= 1e-6);
});

test("clip tokenizer: PickScore-style (longest, pad '!') and 77-token ids of the case's prompts", () => {
  const tok = ClipTokenizer.fromFile(undefined, { padToken: "!" });
  const longest = tok.encodeBatch(values.prompts, { padding: "longest" });
  assert.deepEqual(Array.from(longest.flat!), ref.array("input_ids"));
  assert.deepEqual(longest.attentionMask.flat(), ref.array("attention_mask"));
  const eosPad = ClipTokenizer.fromFile();
  assert.deepEqual(Array.from(eosPad.encodeBatch(values.prompts).flat!), ref.array("input_ids_77"));
});

test("CLIPModel: pooled outputs, image / text features and PickScore-style scores match transformers", async () => {
  const model = loadClipModel(join(ref.dir, "clip"));
  try {
    assert.equal(model.numParameters(), ref.json.components!.clip!.num_parameters);
    assert.ok(Math.abs(model.logitScaleExp() - values.logit_scale_exp) <= 1e-6 * values.logit_scale_exp);
    noGrad(() => tidy(() => {
      const pixels = ref.tensor("pixel_values");
      const vision = model.visionTower.forward(pixels);
      // measured relative errors: vision pooled 1.1e-7, image features 1.5e-7, text pooled 1.8e-7,
      // text features 3.8e-7 (77-token 1.8e-7), scores 5.7e-7; tolerance 1e-5 (> 17× margin)
      assertClose(vision.pooled, ref.tensor("vision_pooler_output"), 1e-5, "vision_pooler_output");
      const img = model.imageFeatures(pixels);
      assertClose(img, ref.tensor("image_features"), 1e-5, "image_features");
      const ids = ref.tensor("input_ids");
      assertClose(model.textTower.forward(ids).pooled, ref.tensor("text_pooler_output"), 1e-5, "text_pooler_output");
      const txt = model.textFeatures(ids);
      assertClose(txt, ref.tensor("text_features"), 1e-5, "text_features");
      const txt77 = model.textFeatures(ref.tensor("input_ids_77"));
      assertClose(txt77, ref.tensor("text_features_77"), 1e-5, "text_features_77");
      const unit = (t: typeof img) => t.div(t.norm([1], true));
      const scores = unit(txt).matmul(unit(img).transpose(0, 1)).mul(model.logitScaleExp());
      assertClose(scores, ref.tensor("pickscore_scores"), 1e-5, "pickscore_scores");
      const scores77 = unit(txt77).matmul(unit(img).transpose(0, 1)).mul(model.logitScaleExp());
      assertClose(scores77, ref.tensor("pickscore_scores_77"), 1e-5, "pickscore_scores_77");
    }));
  } finally {
    model.dispose();
  }
});

test("loadClipModel: a folder without weights is an error naming the file and the expected keys", () => {
  assert.throws(() => loadClipModel(join(ref.dir, "aesthetic")), /config\.json/);
  assert.throws(() => loadClipModel(ref.dir), /no config\.json|model\.safetensors/);
});

test("CLIPModel at real sizes (meta device): parameter counts of openai/clip-vit-base-patch32 and -large-patch14", () => {
  const previous = getDefaultDevice();
  setDefaultDevice("meta"); // names and shapes only, no weight memory
  try {
    // transformers' defaults are ViT-B/32: 151,277,313 parameters (its model card / num_parameters())
    const b32 = new ClipModel(clipConfigFromJson({}));
    assert.equal(b32.numParameters(), 151_277_313);
    b32.dispose();
    const l14 = new ClipModel(clipConfigFromJson({
      projection_dim: 768,
      text_config: { hidden_size: 768, intermediate_size: 3072, num_attention_heads: 12, num_hidden_layers: 12 },
      vision_config: { hidden_size: 1024, intermediate_size: 4096, num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14 },
    }));
    assert.equal(l14.numParameters(), 427_616_513);
    const names = [...l14.stateDict().keys()];
    assert.ok(names.includes("vision_model.pre_layrnorm.weight") && names.includes("logit_scale") && names.includes("visual_projection.weight"));
    // text 2 + 12·16 + 2 = 196; vision 3 + 2 + 24·16 + 2 = 391; two projections and logit_scale
    assert.equal(names.length, 196 + 391 + 3);
    l14.dispose();
  } finally {
    setDefaultDevice(previous);
  }
});
