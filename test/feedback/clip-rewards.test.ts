// The paper's scorers (clip, pickscore, hpsv2, aesthetic, weighted mixes) loaded by spec and
// checked against the clip-reward reference case (transformers CLIPModel + CLIPImageProcessor on
// tiny random weights, a LAION-aesthetic-style MLP, two real emoji PNGs). The open_clip path is
// checked on the same tiny model re-keyed with open_clip's names by the inverse mapping below,
// written here independently of src/models/clip/open-clip.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { readSafetensorsSync, writeSafetensorsSync } from "../../src/io/safetensors.js";
import { convertToRgb } from "../../src/models/clip/image-processor.js";
import { openClipToClip } from "../../src/models/clip/open-clip.js";
import { aestheticInput, loadAestheticMlp, loadReward, parseRewardSpec, rewardSpecName, type RewardProgress } from "../../src/feedback/index.js";
import { loadClipReward } from "../../src/feedback/clip-rewards.js";
import type { RgbImage } from "../../src/sample/generate.js";
import { cat, noGrad, tensor, type Tensor } from "../../src/tensor/index.js";
import { referenceCase, relativeError } from "../_reference.js";

const ref = referenceCase("clip-reward");
const values = ref.json.values as { prompts: string[]; logit_scale_exp: number; images: { file: string }[] };
const clipDir = join(ref.dir, "clip");

async function caseImages(): Promise<RgbImage[]> {
  return Promise.all(values.images.map(async (im) => {
    const { data, info } = await sharp(join(ref.dir, im.file)).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
    const rgb = convertToRgb({ width: info.width, height: info.height, channels: 4, data: new Uint8Array(data) });
    return { width: rgb.width, height: rgb.height, data: rgb.data };
  }));
}

/** All (prompt i, image j) pairs, prompt-major, as pickscore_scores[i][j] is laid out. */
async function allPairs(): Promise<{ images: RgbImage[]; prompts: string[] }> {
  const imgs = await caseImages();
  const images: RgbImage[] = [];
  const prompts: string[] = [];
  for (const p of values.prompts) for (const im of imgs) { images.push(im); prompts.push(p); }
  return { images, prompts };
}

function assertRel(ours: number[], expected: number[], tol: number, what: string): number {
  const err = relativeError(ours, expected);
  assert.ok(err <= tol, `${what}: relative error ${err.toExponential(3)} > ${tol} (ours ${ours.join(", ")}; expected ${expected.join(", ")})`);
  return err;
}

// Measured relative errors (this machine): pickscore 5.5e-7, clip 5.5e-7, aesthetic 7.7e-7,
// aesthetic_input 0, open_clip hpsv2 5.5e-7 / pickscore 5.5e-7, mix 5.5e-7. Tolerance 1e-5 (≥ 12× margin).
const TOL = 1e-5;

test("pickscore=FOLDER: exp(logit_scale)·cos for every (prompt, image) pair, with progress per batch", async () => {
  const reward = loadReward(`pickscore=${clipDir}`);
  try {
    assert.equal(reward.name, "pickscore");
    const { images, prompts } = await allPairs();
    const scores = await reward.score(images, prompts);
    assertRel(scores, ref.array("pickscore_scores"), TOL, "pickscore");
  } finally {
    reward.dispose?.();
  }
  const batched = loadClipReward("pickscore", clipDir, { batchSize: 1 });
  try {
    const events: RewardProgress[] = [];
    const { images, prompts } = await allPairs();
    const scores = await batched.score(images, prompts, { onEvent: (e) => events.push(e) });
    assert.deepEqual(events.map((e) => e.done), [1, 2, 3, 4]);
    assert.ok(events.every((e) => e.total === 4 && e.reward === "pickscore"));
    assertRel(scores, ref.array("pickscore_scores"), TOL, "pickscore, batch 1");
  } finally {
    batched.dispose?.();
  }
});

test("clip=FOLDER: CLIP score = 100·cos (torchmetrics' per-sample CLIPScore)", async () => {
  const reward = loadReward(`clip=${clipDir}`);
  try {
    const { images, prompts } = await allPairs();
    const scores = await reward.score(images, prompts);
    const cos = ref.array("pickscore_scores").map((s) => s / values.logit_scale_exp);
    assertRel(scores, cos.map((c) => 100 * c), TOL, "clip");
  } finally {
    reward.dispose?.();
  }
});

function aestheticFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), "ddpo-aesthetic-"));
  symlinkSync(join(ref.dir, "aesthetic", "aesthetic_mlp.safetensors"), join(dir, "aesthetic_mlp.safetensors"));
  symlinkSync(clipDir, join(dir, "clip"));
  return dir;
}

test("aesthetic=FOLDER: the LAION MLP on the normalised image features", async () => {
  const dir = aestheticFolder();
  const reward = loadReward(`aesthetic=${dir}`);
  try {
    const images = await caseImages();
    const scores = await reward.score(images, ["anything", "ignored"]);
    assertRel(scores, ref.array("aesthetic_score"), TOL, "aesthetic");
    const u = aestheticInput(ref.tensor("image_features"));
    assertRel(u.toArray(), ref.array("aesthetic_input"), TOL, "aesthetic_input");
    const zero = aestheticInput(tensor(new Float32Array(4), [1, 4]));
    assert.deepEqual(zero.toArray(), [0, 0, 0, 0]); // ‖0‖ taken as 1, as its normalized()
  } finally {
    reward.dispose?.();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("aesthetic: wrong or missing weights are errors naming the file and the expected keys", () => {
  const dir = mkdtempSync(join(tmpdir(), "ddpo-aesthetic-bad-"));
  try {
    symlinkSync(clipDir, join(dir, "clip"));
    writeSafetensorsSync(join(dir, "aesthetic_mlp.safetensors"), new Map([["layers.0.weight", tensor(new Float32Array(16), [1, 16])]]));
    assert.throws(() => loadReward(`aesthetic=${dir}`), (err: Error) => {
      assert.match(err.message, /aesthetic_mlp\.safetensors: not the LAION aesthetic predictor \(missing layers\.0\.bias/);
      assert.match(err.message, /expected exactly layers\.0\.weight, layers\.0\.bias, layers\.2\.weight/);
      return true;
    });
    assert.throws(() => loadReward(`aesthetic=${join(dir, "nothing")}`), /nothing: not found/);
    const goldenPt = new URL("../golden/models/torch-checkpoint/checkpoint.pt", import.meta.url).pathname;
    assert.throws(() => loadAestheticMlp(goldenPt), /checkpoint\.pt: not the LAION aesthetic predictor \(missing layers\.0\.weight/);
    assert.throws(() => loadReward("aesthetic"), /the aesthetic reward needs its weights on disk \(nothing is downloaded\): --reward aesthetic=PATH/);
    // a folder without config.json is read as open_clip: its one .safetensors is named, with the keys expected
    assert.throws(() => loadReward(`pickscore=${dir}`), /pickscore=.*aesthetic_mlp\.safetensors: no "visual\.conv1\.weight"; this is not an open_clip CLIP state dict \(expected keys/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- open_clip ------------------------------------------------------------------------------

/** transformers CLIPModel names → open_clip's (the inverse of the converter, written out separately). */
function toOpenClip(hf: Map<string, Tensor>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const T = (t: Tensor) => t.transpose(0, 1).contiguous();
  const tower = (hfPrefix: string, ocPrefix: string) => {
    for (let i = 0; hf.has(`${hfPrefix}encoder.layers.${i}.layer_norm1.weight`); i++) {
      const a = `${hfPrefix}encoder.layers.${i}.`, b = `${ocPrefix}transformer.resblocks.${i}.`;
      for (const p of ["weight", "bias"]) {
        out.set(`${b}ln_1.${p}`, hf.get(`${a}layer_norm1.${p}`)!);
        out.set(`${b}ln_2.${p}`, hf.get(`${a}layer_norm2.${p}`)!);
        out.set(`${b}mlp.c_fc.${p}`, hf.get(`${a}mlp.fc1.${p}`)!);
        out.set(`${b}mlp.c_proj.${p}`, hf.get(`${a}mlp.fc2.${p}`)!);
        out.set(`${b}attn.out_proj.${p}`, hf.get(`${a}self_attn.out_proj.${p}`)!);
        out.set(`${b}attn.in_proj_${p}`, cat(["q", "k", "v"].map((n) => hf.get(`${a}self_attn.${n}_proj.${p}`)!), 0));
      }
    }
  };
  out.set("visual.conv1.weight", hf.get("vision_model.embeddings.patch_embedding.weight")!);
  out.set("visual.class_embedding", hf.get("vision_model.embeddings.class_embedding")!);
  out.set("visual.positional_embedding", hf.get("vision_model.embeddings.position_embedding.weight")!);
  for (const p of ["weight", "bias"]) {
    out.set(`visual.ln_pre.${p}`, hf.get(`vision_model.pre_layrnorm.${p}`)!);
    out.set(`visual.ln_post.${p}`, hf.get(`vision_model.post_layernorm.${p}`)!);
    out.set(`ln_final.${p}`, hf.get(`text_model.final_layer_norm.${p}`)!);
  }
  tower("vision_model.", "visual.");
  out.set("visual.proj", T(hf.get("visual_projection.weight")!));
  out.set("token_embedding.weight", hf.get("text_model.embeddings.token_embedding.weight")!);
  out.set("positional_embedding", hf.get("text_model.embeddings.position_embedding.weight")!);
  tower("text_model.", "");
  out.set("text_projection", T(hf.get("text_projection.weight")!));
  out.set("logit_scale", hf.get("logit_scale")!);
  return out;
}

function openClipCopy(): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), "ddpo-openclip-"));
  const { tensors } = readSafetensorsSync(join(clipDir, "model.safetensors"));
  const oc = noGrad(() => toOpenClip(tensors));
  const file = join(dir, "open_clip_model.safetensors");
  writeSafetensorsSync(file, oc);
  // the tiny model's head counts: vision 32 wide / head_width 8 = 4 heads, text 4 heads, quick_gelu
  writeFileSync(join(dir, "open_clip_config.json"), JSON.stringify({
    model_cfg: { embed_dim: 16, quick_gelu: true, vision_cfg: { image_size: 32, layers: 2, width: 32, head_width: 8, patch_size: 8 }, text_cfg: { context_length: 77, vocab_size: 49408, width: 32, heads: 4, layers: 2 } },
    preprocess_cfg: { mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711] },
  }));
  return { dir, file };
}

test("open_clip-keyed copy of the tiny model: hpsv2 = cos, pickscore from the open_clip file, same scores", async () => {
  const { dir, file } = openClipCopy();
  try {
    const { images, prompts } = await allPairs();
    const cos = ref.array("pickscore_scores").map((s) => s / values.logit_scale_exp);
    const hps = loadReward(`hpsv2=${file}`);
    try {
      assert.equal(hps.name, "hpsv2");
      assertRel(await hps.score(images, prompts), cos, TOL, "hpsv2 (open_clip file)");
    } finally {
      hps.dispose?.();
    }
    const pick = loadReward(`pickscore=${dir}`); // a folder holding one open_clip .safetensors
    try {
      assertRel(await pick.score(images, prompts), ref.array("pickscore_scores"), TOL, "pickscore (open_clip folder)");
    } finally {
      pick.dispose?.();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("open_clip converter: shapes give the sizes, the config the heads; foreign keys are named", () => {
  const { dir, file } = openClipCopy();
  try {
    const { tensors } = readSafetensorsSync(file);
    const { state, config } = openClipToClip(tensors, { quickGelu: true, visionHeadWidth: 8, textHeads: 4 }, file);
    assert.equal(config.vision.numAttentionHeads, 4);
    assert.equal(config.vision.imageSize, 32);
    assert.equal(config.vision.patchSize, 8);
    assert.equal(config.text.numHiddenLayers, 2);
    assert.equal(config.projectionDim, 16);
    assert.equal(config.text.eosTokenId, 2); // open_clip pools at argmax(ids)
    const hf = readSafetensorsSync(join(clipDir, "model.safetensors")).tensors;
    for (const [k, v] of hf) {
      assert.ok(state.has(k), `converted state lacks ${k}`);
      assert.deepEqual(state.get(k)!.shape, v.shape, k);
      assert.deepEqual(state.get(k)!.toArray(), v.toArray(), `${k} differs after the round trip`);
    }
    assert.equal(state.size, hf.size);
    tensors.set("visual.transformer.resblocks.0.ls_1.gamma", tensor(new Float32Array(32), [32]));
    assert.throws(() => openClipToClip(tensors, { quickGelu: true, visionHeadWidth: 8, textHeads: 4 }, file), /keys an open_clip ViT CLIP does not have: visual\.transformer\.resblocks\.0\.ls_1\.gamma/);
    tensors.delete("visual.proj");
    assert.throws(() => openClipToClip(tensors, { quickGelu: true, visionHeadWidth: 8, textHeads: 4 }, file), /no "visual\.proj"; this is not an open_clip CLIP state dict \(expected keys visual\.conv1\.weight/);
    assert.throws(() => loadReward(`hpsv2=${join(dir, "HPS_v2_compressed.pt")}`), /not found/);
    writeFileSync(join(dir, "HPS_v2_compressed.pt"), "");
    assert.throws(() => loadReward(`hpsv2=${join(dir, "HPS_v2_compressed.pt")}`), /HPS_v2_compressed\.pt: not a zip-format PyTorch checkpoint/);
    // a real torch.save file is read (readTorchCheckpoint) and its state_dict handed to the converter
    const golden = new URL("../golden/models/torch-checkpoint/checkpoint.pt", import.meta.url).pathname;
    assert.throws(() => loadReward(`hpsv2=${golden}`), /checkpoint\.pt: no "visual\.conv1\.weight"; this is not an open_clip CLIP state dict/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- specs and mixes ------------------------------------------------------------------------

test("reward specs: NAME=PATH, WEIGHT*NAME, '+'-joined mixes; mistakes get a message saying the form", () => {
  assert.deepEqual(parseRewardSpec("pickscore=/models/PickScore_v1"), [{ name: "pickscore", path: "/models/PickScore_v1" }]);
  assert.deepEqual(parseRewardSpec("0.7*pickscore=/m/a+b+0.3*aesthetic=/m/c"), [
    { name: "pickscore", path: "/m/a+b", weight: 0.7 }, { name: "aesthetic", path: "/m/c", weight: 0.3 },
  ]);
  assert.deepEqual(parseRewardSpec("2*appeal"), [{ name: "appeal", weight: 2 }]);
  assert.equal(rewardSpecName(parseRewardSpec("0.7*pickscore=/a+0.3*aesthetic=/b")), "0.7*pickscore+0.3*aesthetic");
  assert.throws(() => parseRewardSpec("pickscore=0.7"), /a weight goes before the name \(0\.7\*pickscore\)/);
  // "+" splits only before a weighted term: here it stays in the path (which the loader then reports missing)
  assert.deepEqual(parseRewardSpec("0.7*pickscore=/a+aesthetic=/b"), [{ name: "pickscore", path: "/a+aesthetic=/b", weight: 0.7 }]);
  assert.throws(() => parseRewardSpec("pickscore=/a+0.3*aesthetic=/b"), /every term needs a weight/);
  assert.throws(() => parseRewardSpec("pickscore="), /needs a path after "="/);
  assert.throws(() => loadReward("no-such-reward"), /unknown reward "no-such-reward": give one of alignment, appeal, category, clip=PATH, pickscore=PATH/);
});

test("a weighted mix is Σ w·score, named by its weights and names, progress across its terms", async () => {
  const dir = aestheticFolder();
  const mix = loadReward(`0.7*pickscore=${clipDir}+0.3*aesthetic=${dir}`);
  try {
    assert.equal(mix.name, "0.7*pickscore+0.3*aesthetic");
    const images = await caseImages();
    const prompts = [values.prompts[0]!, values.prompts[0]!];
    const events: RewardProgress[] = [];
    const scores = await mix.score(images, prompts, { onEvent: (e) => events.push(e) });
    const pick = ref.array("pickscore_scores").slice(0, 2);
    const aes = ref.array("aesthetic_score");
    assertRel(scores, pick.map((p, j) => 0.7 * p + 0.3 * aes[j]!), TOL, "mix");
    assert.equal(events.at(-1)!.done, 4);
    assert.equal(events.at(-1)!.total, 4);
  } finally {
    mix.dispose?.();
    rmSync(dir, { recursive: true, force: true });
  }
});
