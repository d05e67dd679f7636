import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync, mkdirSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import { assertNear } from "../_close.js";
import { join } from "node:path";
import {
  createTextToImageModel, disposeTextToImageModel, emptyPromptEmbedding, encodePrompts, loadModelFolder, saveModelFolder,
  type TextToImageModel,
} from "../../src/models/pipeline.js";
import { TINY_AUTOENCODER_KL_CONFIG } from "../../src/models/vae/autoencoder-kl.js";
import { TINY_CLIP_TEXT_CONFIG } from "../../src/models/clip/text-model.js";
import { ClipTokenizer } from "../../src/models/clip/tokenizer.js";
import { TINY_UNET_CONFIG } from "../../src/models/unet/config.js";
import { SafetensorsFile, readSafetensorsSync, writeSafetensorsSync } from "../../src/io/safetensors.js";
import { Generator, noGrad, rand, randn, tensor, tidy, type Tensor } from "../../src/tensor/index.js";

const tokenizer = ClipTokenizer.fromFile();
const LATENT_UNET = { ...TINY_UNET_CONFIG, inChannels: 4, outChannels: 4 };
const tmpRoot = mkdtempSync(join(tmpdir(), "ddpo-folder-"));
process.on("exit", () => rmSync(tmpRoot, { recursive: true, force: true }));
let counter = 0;
const freshDir = () => join(tmpRoot, `m${counter++}`);

/** Every output of every component on fixed inputs, as flat arrays. */
function outputs(model: TextToImageModel): Record<string, Float32Array> {
  return tidy(() => noGrad(() => {
    const out: Record<string, Float32Array> = {};
    const cond = encodePrompts(model, ["a red circle", "an emoji of a cat"]);
    out.cond = cond.toFloat32Array();
    const c = model.unet.config.inChannels;
    const x = randn([2, c, 8, 8], new Generator(1));
    out.unet = model.unet.forward(x, tensor(new BigInt64Array([10n, 500n])), cond).toFloat32Array();
    if (model.vae) {
      const img = rand([1, 3, 16, 16], new Generator(2)).mul(2).sub(1);
      out.latents = model.vae.encodeLatents(img).toFloat32Array();
      out.decoded = model.vae.decode(randn([1, 4, 8, 8], new Generator(3))).toFloat32Array();
    }
    return out;
  }));
}

function assertSameOutputs(a: Record<string, Float32Array>, b: Record<string, Float32Array>): void {
  assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort());
  for (const k of Object.keys(a)) assert.deepEqual(b[k], a[k], `${k} differs after the round trip`);
}

// Built and saved once (model construction and folder writes dominate this file's run time);
// tests that tamper with a folder work on a copy.
const latent = createTextToImageModel({ unet: LATENT_UNET, vae: TINY_AUTOENCODER_KL_CONFIG, tokenizer, schedulerClass: "PNDMScheduler" });
const latentDir = freshDir();
saveModelFolder(latentDir, latent);
const latentOutputs = outputs(latent);
const pixel = createTextToImageModel({ tokenizer });
const pixelDir = freshDir();
saveModelFolder(pixelDir, pixel);
function copyOf(dir: string): string {
  const copy = freshDir();
  cpSync(dir, copy, { recursive: true });
  return copy;
}

test("model folder: latent model save → load gives identical outputs, in the diffusers layout", () => {
  const model = latent;
  const dir = copyOf(latentDir);
  const files = (sub: string) => readdirSync(join(dir, sub)).sort();
  assert.deepEqual(readdirSync(dir).sort(), ["model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]);
  assert.deepEqual(files("unet"), ["config.json", "diffusion_pytorch_model.safetensors"]);
  assert.deepEqual(files("vae"), ["config.json", "diffusion_pytorch_model.safetensors"]);
  assert.deepEqual(files("text_encoder"), ["config.json", "model.safetensors"]);
  assert.deepEqual(files("tokenizer"), ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]);
  assert.deepEqual(files("scheduler"), ["scheduler_config.json"]);
  assert.equal(readdirSync(tmpRoot).filter((f) => f.startsWith(".")).length, 0, "no temporary folder left behind");

  const index = JSON.parse(readFileSync(join(dir, "model_index.json"), "utf8"));
  assert.equal(index._class_name, "StableDiffusionPipeline");
  assert.equal(typeof index._diffusers_version, "string");
  assert.deepEqual(index.unet, ["diffusers", "UNet2DConditionModel"]);
  assert.deepEqual(index.vae, ["diffusers", "AutoencoderKL"]);
  assert.deepEqual(index.text_encoder, ["transformers", "CLIPTextModel"]);
  assert.deepEqual(index.tokenizer, ["transformers", "CLIPTokenizer"]);
  assert.deepEqual(index.scheduler, ["diffusers", "PNDMScheduler"]);
  const unetConfig = JSON.parse(readFileSync(join(dir, "unet", "config.json"), "utf8"));
  assert.equal(unetConfig._class_name, "UNet2DConditionModel");
  assert.equal(unetConfig.cross_attention_dim, 64);
  const vaeConfig = JSON.parse(readFileSync(join(dir, "vae", "config.json"), "utf8"));
  assert.equal(vaeConfig.scaling_factor, 0.18215);
  const sched = JSON.parse(readFileSync(join(dir, "scheduler", "scheduler_config.json"), "utf8"));
  assert.equal(sched._class_name, "PNDMScheduler");
  assert.equal(sched.beta_schedule, "scaled_linear");
  // every parameter is in the files under its own name, with format "pt" metadata
  const te = SafetensorsFile.open(join(dir, "text_encoder", "model.safetensors"));
  assert.deepEqual(te.keys().sort(), [...model.textEncoder.stateDict().keys()].sort());
  assert.equal(te.metadata.format, "pt");
  te.close();

  const loaded = loadModelFolder(dir);
  assert.deepEqual(loaded.unet.config, model.unet.config);
  assert.deepEqual(loaded.textEncoder.config, model.textEncoder.config);
  assert.deepEqual(loaded.vae!.config, model.vae!.config);
  assert.deepEqual(loaded.scheduler, model.scheduler);
  assert.equal(loaded.schedulerClass, "PNDMScheduler");
  assertSameOutputs(latentOutputs, outputs(loaded));

  // saving again over a model folder replaces it atomically
  saveModelFolder(dir, loaded);
  assert.ok(existsSync(join(dir, "vae", "config.json")));
  disposeTextToImageModel(loaded);
});

test("model folder: pixel-space model has no vae/ and records vae as [null, null]", () => {
  const model = pixel;
  assert.equal(model.vae, null);
  const dir = copyOf(pixelDir);
  assert.ok(!existsSync(join(dir, "vae")));
  const index = JSON.parse(readFileSync(join(dir, "model_index.json"), "utf8"));
  assert.deepEqual(index.vae, [null, null]);
  const loaded = loadModelFolder(dir);
  assert.equal(loaded.vae, null);
  assertSameOutputs(outputs(model), outputs(loaded));
  // a bare null is accepted too
  writeFileSync(join(dir, "model_index.json"), JSON.stringify({ ...index, vae: null }));
  const again = loadModelFolder(dir);
  assert.equal(again.vae, null);
  disposeTextToImageModel(loaded);
  disposeTextToImageModel(again);
});

test("model folder: missing and unexpected weights are listed with the file", () => {
  const model = pixel;
  const dir = copyOf(pixelDir);
  const path = join(dir, "unet", "diffusion_pytorch_model.safetensors");
  const { tensors } = readSafetensorsSync(path);
  tensors.delete("conv_out.bias");
  tensors.delete("time_embedding.linear_1.weight");
  tensors.set("down_blocks.7.resnets.0.conv1.weight", tensor([1, 2]));
  writeSafetensorsSync(path, tensors);
  assert.throws(() => loadModelFolder(dir), (e: Error) =>
    e.message.includes(path)
    && /missing weights: .*time_embedding\.linear_1\.weight/.test(e.message)
    && /missing weights: .*conv_out\.bias/.test(e.message)
    && /unexpected weights: down_blocks\.7\.resnets\.0\.conv1\.weight/.test(e.message));
  // a wrong shape names the weight, the file and both shapes
  tensors.delete("down_blocks.7.resnets.0.conv1.weight");
  tensors.set("conv_out.bias", tensor([1, 2]));
  tensors.set("time_embedding.linear_1.weight", model.unet.time_embedding.linear_1.weight);
  writeSafetensorsSync(path, tensors);
  assert.throws(() => loadModelFolder(dir), /weight "conv_out\.bias" in .*diffusion_pytorch_model\.safetensors has shape \[2\] but the model expects \[3\]/);
});

test("model folder: pickle-only weights ask for a conversion; missing parts are named", () => {
  const dir = copyOf(pixelDir);
  renameSync(join(dir, "text_encoder", "model.safetensors"), join(dir, "text_encoder", "pytorch_model.bin"));
  assert.throws(() => loadModelFolder(dir), /text_encoder holds only PyTorch pickle weights \(pytorch_model\.bin\).*convert.*safetensors/is);
  unlinkSync(join(dir, "text_encoder", "pytorch_model.bin"));
  assert.throws(() => loadModelFolder(dir), /no weights found \(expected model\.safetensors/);
  rmSync(join(dir, "scheduler"), { recursive: true });
  assert.throws(() => loadModelFolder(dir), /scheduler_config\.json is missing|no weights found/);
  assert.throws(() => loadModelFolder(join(dir, "nope")), /does not exist/);
  const sdxl = copyOf(pixelDir);
  const index = JSON.parse(readFileSync(join(sdxl, "model_index.json"), "utf8"));
  writeFileSync(join(sdxl, "model_index.json"), JSON.stringify({ ...index, _class_name: "StableDiffusionXLPipeline", text_encoder_2: ["transformers", "CLIPTextModelWithProjection"] }));
  // an SDXL index over single-encoder parts: the missing pieces are named before any weights are read
  assert.throws(() => loadModelFolder(sdxl), /"text_encoder_2" is listed but "tokenizer_2" is not/);
  writeFileSync(join(sdxl, "model_index.json"), JSON.stringify({ ...index, text_encoder_2: ["transformers", "CLIPTextModelWithProjection"], tokenizer_2: ["transformers", "CLIPTokenizer"] }));
  assert.throws(() => loadModelFolder(sdxl), /text_encoder_2[/\\]config\.json is missing/);
  // refuses to overwrite a folder that is not a model folder
  const other = freshDir();
  mkdirSync(other);
  writeFileSync(join(other, "notes.txt"), "keep me");
  assert.throws(() => saveModelFolder(other, pixel), /not empty and holds no model_index\.json/);
  assert.equal(readFileSync(join(other, "notes.txt"), "utf8"), "keep me");
});

test("model folder: old checkpoints — legacy VAE attention names, CLIP position_ids, sharded UNet, fp16 variant", () => {
  const model = latent;
  const dir = copyOf(latentDir);
  const expected = latentOutputs;
  // VAE saved by diffusers < 0.14: query/key/value/proj_attn, as 1×1 convs
  const vaePath = join(dir, "vae", "diffusion_pytorch_model.safetensors");
  const vae = readSafetensorsSync(vaePath).tensors;
  const legacy = new Map<string, Tensor>();
  const names: Record<string, string> = { to_q: "query", to_k: "key", to_v: "value", "to_out.0": "proj_attn" };
  for (const [n, t] of vae) {
    const m = /^(.*\.attentions\.0)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(n);
    legacy.set(m ? `${m[1]}.${names[m[2]!]}.${m[3]}` : n, m && m[3] === "weight" ? t.reshape([...t.shape, 1, 1]) : t);
  }
  assert.ok(legacy.has("decoder.mid_block.attentions.0.proj_attn.weight"));
  writeSafetensorsSync(vaePath, legacy);
  // text encoder saved by transformers < 4.31: position_ids buffer included
  const tePath = join(dir, "text_encoder", "model.safetensors");
  const te = readSafetensorsSync(tePath).tensors;
  te.set("text_model.embeddings.position_ids", tensor(new BigInt64Array(77).map((_, i) => BigInt(i)), [1, 77]));
  writeSafetensorsSync(tePath, te);
  // UNet in two shards with an index
  const unetDir = join(dir, "unet");
  const unet = readSafetensorsSync(join(unetDir, "diffusion_pytorch_model.safetensors")).tensors;
  unlinkSync(join(unetDir, "diffusion_pytorch_model.safetensors"));
  const keys = [...unet.keys()];
  const shardA = new Map(keys.slice(0, 40).map((k) => [k, unet.get(k)!]));
  const shardB = new Map(keys.slice(40).map((k) => [k, unet.get(k)!]));
  writeSafetensorsSync(join(unetDir, "diffusion_pytorch_model-00001-of-00002.safetensors"), shardA);
  writeSafetensorsSync(join(unetDir, "diffusion_pytorch_model-00002-of-00002.safetensors"), shardB);
  const weightMap = Object.fromEntries(keys.map((k, i) => [k, `diffusion_pytorch_model-0000${i < 40 ? 1 : 2}-of-00002.safetensors`]));
  writeFileSync(join(unetDir, "diffusion_pytorch_model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  const loaded = loadModelFolder(dir);
  assertSameOutputs(expected, outputs(loaded));
  disposeTextToImageModel(loaded);

  // an fp16 variant next to the fp32 weights: converted to the model's f32 on load
  const te16 = new Map([...te].map(([k, t]) => [k, t.dtype === "f32" ? t.to("f16") : t]));
  writeSafetensorsSync(join(dir, "text_encoder", "model.fp16.safetensors"), te16);
  for (const sub of ["unet", "vae"]) {
    const files = readdirSync(join(dir, sub)).filter((f) => f.endsWith(".safetensors"));
    const all = new Map<string, Tensor>();
    for (const f of files) for (const [k, t] of readSafetensorsSync(join(dir, sub, f)).tensors) all.set(k, t.to("f16"));
    writeSafetensorsSync(join(dir, sub, "diffusion_pytorch_model.fp16.safetensors"), all);
  }
  const half = loadModelFolder(dir, { variant: "fp16" });
  assert.equal(half.unet.conv_in.weight.dtype, "f32");
  const ref = model.unet.conv_in.weight.toFloat32Array();
  const got = half.unet.conv_in.weight.toFloat32Array();
  assert.ok(got.some((v, i) => v !== ref[i]), "the fp16 file was read (values rounded)");
  assert.ok(got.every((v, i) => Math.abs(v - ref[i]!) <= 1e-3 * Math.max(1, Math.abs(ref[i]!))), "fp16 values ≈ the originals");
  disposeTextToImageModel(half);
});

test("encodePrompts and the empty-prompt embedding", () => {
  const model = pixel;
  tidy(() => noGrad(() => {
    const cond = encodePrompts(model, ["a red circle", "", "x ".repeat(200)]);
    assert.deepEqual(cond.shape, [3, 77, TINY_CLIP_TEXT_CONFIG.hiddenSize]);
    const batch = tokenizer.encodeBatch(["a red circle"], { maxLength: 77 });
    const direct = model.textEncoder.forward(tensor(batch.flat!, batch.shape!, { dtype: "i64" })).lastHiddenState;
    // a batch of 3 and a batch of 1 run different matmul kernels: equal to float32 rounding (measured
    // ≤ 2e-7 scaled, OpenBLAS Haswell vs SkylakeX), not bit for bit; 1e-5 leaves a 50× margin
    assertNear(cond.slice(0, 0, 1), direct, 1e-5, "prompt 0 in a batch of 3 vs alone");
    const empty = emptyPromptEmbedding(model);
    assert.deepEqual(empty.shape, [1, 77, TINY_CLIP_TEXT_CONFIG.hiddenSize]);
    assertNear(empty, cond.slice(0, 1, 2), 1e-5, "the empty-prompt embedding vs the empty prompt in a batch");
  }));
  // gradients flow into the text encoder (it is trained jointly in the small model)
  const w = model.textEncoder.text_model.final_layer_norm.weight!;
  tidy(() => encodePrompts(model, ["a cat"]).square().mean().backward());
  assert.ok(w.grad !== null && w.grad !== undefined && w.grad.abs().sum().item() > 0);
  model.textEncoder.zeroGrad();
  assert.throws(() => encodePrompts(model, []), /at least one prompt/);
});

test("createTextToImageModel checks that the components fit together", () => {
  assert.throws(() => createTextToImageModel({ tokenizer, textEncoder: { ...TINY_CLIP_TEXT_CONFIG, hiddenSize: 32 } }),
    /hidden_size 32 does not match the UNet's cross_attention_dim 64/);
  assert.throws(() => createTextToImageModel({ tokenizer, vae: TINY_AUTOENCODER_KL_CONFIG }),
    /4 latent channels but the UNet takes in_channels 3/);
});
