// Single-file checkpoints (src/models/convert/single-file.ts) on the tiny reference folders:
// original-SD key names and shapes (VAE attention as 1×1 convs, open_clip q/k/v stacked and the
// projection transposed), folder → single file → folder → single file bit-identical, and the
// re-imported folders reproduce diffusers' recorded UNet outputs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { SafetensorsFile, writeSafetensorsSync, type RawTensor } from "../../../src/io/safetensors.js";
import { disposeTextToImageModel, loadModelFolder } from "../../../src/models/pipeline.js";
import { CheckpointError, exportSingleFileCheckpoint, importSingleFileCheckpoint, writeSd15Configs } from "../../../src/models/convert/single-file.js";
import { parseUNetConfig } from "../../../src/models/unet/index.js";
import { clipTextConfigFromJson } from "../../../src/models/clip/text-model.js";
import { autoencoderKLConfigFromJson } from "../../../src/models/vae/autoencoder-kl.js";
import { ClipTokenizer } from "../../../src/models/clip/tokenizer.js";
import { scheduleConfigFromDiffusers } from "../../../src/diffusion/schedule.js";
import { rawTranspose2d } from "../../../src/models/convert/component-names.js";
import { noGrad, tidy } from "../../../src/tensor/index.js";
import { assertClose, referenceCase } from "../../_reference.js";

const tmp = mkdtempSync(join(tmpdir(), "single-file-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const sd15 = referenceCase("sd15-pipeline");
const sdxl = referenceCase("sdxl-pipeline");
const sd15Dir = sd15.pipelineFolder();
const sdxlDir = sdxl.pipelineFolder();
process.on("exit", () => { rmSync(sd15Dir, { recursive: true, force: true }); rmSync(sdxlDir, { recursive: true, force: true }); });

function readAllRaw(file: string): Map<string, RawTensor> {
  const f = SafetensorsFile.open(file);
  try {
    return new Map(f.keys().map((k) => [k, f.readRaw(k)]));
  } finally {
    f.close();
  }
}

function sameBytes(a: RawTensor, b: RawTensor): boolean {
  return a.dtype === b.dtype && a.shape.join(",") === b.shape.join(",") && Buffer.from(a.bytes).equals(Buffer.from(b.bytes));
}

/** Every weight file and config of `b` equals `a`'s (weights tensor by tensor, bit for bit). */
function assertSameFolder(a: string, b: string): void {
  const files = (d: string): string[] => readdirSync(d).flatMap((e) => statSync(join(d, e)).isDirectory() ? files(join(d, e)) : [join(d, e)]);
  const rel = (d: string) => files(d).map((f) => relative(d, f)).sort();
  assert.deepEqual(rel(b), rel(a));
  for (const r of rel(a)) {
    if (!r.endsWith(".safetensors")) {
      assert.equal(readFileSync(join(b, r), "utf8"), readFileSync(join(a, r), "utf8"), r);
      continue;
    }
    const x = readAllRaw(join(a, r));
    const y = readAllRaw(join(b, r));
    assert.deepEqual([...y.keys()].sort(), [...x.keys()].sort(), r);
    for (const [k, t] of x) assert.ok(sameBytes(t, y.get(k)!), `${r}: ${k}`);
  }
}

test("sd1 export: original names and shapes for all three components", () => {
  const out = join(tmp, "sd15.safetensors");
  const r = exportSingleFileCheckpoint(sd15Dir, out);
  assert.equal(r.family, "sd1");
  const f = SafetensorsFile.open(out);
  try {
    const keys = f.keys();
    const unet = keys.filter((k) => k.startsWith("model.diffusion_model."));
    const vae = keys.filter((k) => k.startsWith("first_stage_model."));
    const te = keys.filter((k) => k.startsWith("cond_stage_model.transformer.text_model."));
    assert.equal(unet.length, r.counts.unet);
    assert.equal(vae.length, r.counts.vae);
    assert.equal(te.length, r.counts.text_encoder);
    assert.equal(keys.length, unet.length + vae.length + te.length, "nothing else (an epsilon model has no v_pred marker)");
    // the tiny UNet: [CrossAttnDown, Down] with one resnet per level
    assert.deepEqual(f.info("model.diffusion_model.input_blocks.1.1.proj_in.weight").shape, [32, 32, 1, 1]);
    assert.deepEqual(f.info("model.diffusion_model.input_blocks.2.0.op.weight").shape, [32, 32, 3, 3]);
    assert.deepEqual(f.info("model.diffusion_model.output_blocks.1.1.conv.weight").shape, [64, 64, 3, 3]);
    assert.deepEqual(f.info("model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight").shape, [32, 24]);
    for (const p of ["q", "k", "v", "proj_out"]) assert.deepEqual(f.info(`first_stage_model.encoder.mid.attn_1.${p}.weight`).shape, [32, 32, 1, 1]);
    assert.ok(f.has("first_stage_model.decoder.up.3.upsample.conv.weight") && !f.has("first_stage_model.decoder.up.0.upsample.conv.weight"));
    assert.ok(f.has("first_stage_model.decoder.up.0.block.1.norm1.weight") && f.has("first_stage_model.encoder.norm_out.weight"));
    assert.ok(f.has("first_stage_model.quant_conv.weight"));
  } finally {
    f.close();
  }
  // the decoder's levels are numbered from the bottom: diffusers' up_blocks.0 is the original up.3
  const src = readAllRaw(join(sd15Dir, "vae", "diffusion_pytorch_model.safetensors"));
  const file = readAllRaw(out);
  assert.ok(sameBytes(src.get("decoder.up_blocks.0.resnets.1.conv2.weight")!, file.get("first_stage_model.decoder.up.3.block.1.conv2.weight")!));
  const q = src.get("encoder.mid_block.attentions.0.to_q.weight")!;
  assert.ok(Buffer.from(q.bytes).equals(Buffer.from(file.get("first_stage_model.encoder.mid.attn_1.q.weight")!.bytes)));
});

test("sd1: single file → folder → single file is bit-identical, and the folder equals the source folder", () => {
  const first = join(tmp, "sd15.safetensors");
  const folder = join(tmp, "sd15-back");
  const r = importSingleFileCheckpoint(first, folder, { configFrom: sd15Dir });
  assert.equal(r.family, "sd1");
  assert.deepEqual(r.skipped, []);
  assertSameFolder(sd15Dir, folder);
  const second = join(tmp, "sd15-again.safetensors");
  exportSingleFileCheckpoint(folder, second);
  assert.ok(readFileSync(first).equals(readFileSync(second)), "the two single files are byte-identical");
  const m = loadModelFolder(folder);
  try {
    noGrad(() => tidy(() => {
      const y = m.unet.forward(sd15.tensor("unet_sample"), sd15.tensor("unet_timestep"), sd15.tensor("unet_encoder_hidden_states"));
      assertClose(y, sd15.tensor("unet_out"), 1e-5, "unet_out"); // as the direct load: 6.5e-7
    }));
  } finally {
    disposeTextToImageModel(m);
  }
});

test("sdxl: both encoders (open_clip q/k/v stacked, projection transposed), and the round trip is bit-identical", () => {
  const first = join(tmp, "sdxl.safetensors");
  const r = exportSingleFileCheckpoint(sdxlDir, first);
  assert.equal(r.family, "sdxl");
  const file = readAllRaw(first);
  const te2 = readAllRaw(join(sdxlDir, "text_encoder_2", "model.safetensors"));
  const p = "conditioner.embedders.1.model.";
  const inProj = file.get(`${p}transformer.resblocks.0.attn.in_proj_weight`)!;
  assert.deepEqual(inProj.shape, [72, 24]);
  const qkv = ["q", "k", "v"].map((x) => te2.get(`text_model.encoder.layers.0.self_attn.${x}_proj.weight`)!.bytes);
  assert.ok(Buffer.from(inProj.bytes).equals(Buffer.concat(qkv.map((b) => Buffer.from(b)))), "rows: q, then k, then v");
  const proj = file.get(`${p}text_projection`)!;
  assert.deepEqual(proj.shape, [24, 16]);
  const hf = te2.get("text_projection.weight")!;
  const a = new Float32Array(hf.bytes.slice().buffer);
  const b = new Float32Array(proj.bytes.slice().buffer);
  assert.equal(b[3 * 16 + 5], a[5 * 24 + 3], "P[i, j] = W[j, i]");
  assert.ok(sameBytes(rawTranspose2d(proj), hf));
  assert.ok(file.has(`${p}positional_embedding`) && file.has(`${p}ln_final.weight`) && file.has(`${p}token_embedding.weight`));
  assert.ok(file.has("conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"));
  assert.ok(file.has("model.diffusion_model.label_emb.0.0.weight") && file.has("model.diffusion_model.output_blocks.2.2.conv.weight"));

  const folder = join(tmp, "sdxl-back");
  importSingleFileCheckpoint(first, folder, { configFrom: sdxlDir });
  assertSameFolder(sdxlDir, folder);
  const second = join(tmp, "sdxl-again.safetensors");
  exportSingleFileCheckpoint(folder, second);
  assert.ok(readFileSync(first).equals(readFileSync(second)));
});

test("v-prediction: a v_pred marker is written, and read back into the scheduler config", () => {
  const vdir = join(tmp, "sd15-v");
  cpSync(sd15Dir, vdir, { recursive: true });
  const sp = join(vdir, "scheduler", "scheduler_config.json");
  writeFileSync(sp, JSON.stringify({ ...JSON.parse(readFileSync(sp, "utf8")), prediction_type: "v_prediction" }));
  const out = join(tmp, "sd15-v.safetensors");
  assert.deepEqual(exportSingleFileCheckpoint(vdir, out).markers, ["v_pred"]);
  assert.deepEqual(SafetensorsFile.open(out).info("v_pred").shape, [0]);
  const back = importSingleFileCheckpoint(out, join(tmp, "sd15-v-back"), { configFrom: sd15Dir });
  assert.equal(back.predictionType, "v_prediction");
  assert.equal(JSON.parse(readFileSync(join(tmp, "sd15-v-back", "scheduler", "scheduler_config.json"), "utf8")).prediction_type, "v_prediction");
});

test("import: EMA and schedule buffers are skipped and reported; unknown keys and a mismatched reference are errors", () => {
  const base = readAllRaw(join(tmp, "sd15.safetensors"));
  const extra = new Map(base);
  const scalar: RawTensor = { dtype: "F32", shape: [1000], bytes: new Uint8Array(4000) };
  extra.set("betas", scalar);
  extra.set("alphas_cumprod", scalar);
  extra.set("model_ema.decay", { dtype: "F32", shape: [], bytes: new Uint8Array(4) });
  extra.set("cond_stage_model.transformer.text_model.embeddings.position_ids", { dtype: "I64", shape: [1, 77], bytes: new Uint8Array(8 * 77) });
  const withExtra = join(tmp, "extra.safetensors");
  writeSafetensorsSync(withExtra, extra);
  const r = importSingleFileCheckpoint(withExtra, join(tmp, "extra-back"), { configFrom: sd15Dir });
  assert.deepEqual(r.skipped.map((s) => s.key).sort(), ["alphas_cumprod", "betas", "cond_stage_model.transformer.text_model.embeddings.position_ids", "model_ema.decay"]);

  const bad = new Map(base);
  bad.set("model.diffusion_model.input_blocks.9.0.op.weight", scalar);
  bad.set("something_else.weight", scalar);
  writeSafetensorsSync(join(tmp, "bad.safetensors"), bad);
  assert.throws(() => importSingleFileCheckpoint(join(tmp, "bad.safetensors"), join(tmp, "bad-back"), { configFrom: sd15Dir }),
    (e: Error) => e instanceof CheckpointError && e.message.includes("model.diffusion_model.input_blocks.9.0.op.weight") && e.message.includes("something_else.weight"));
  assert.throws(() => importSingleFileCheckpoint(join(tmp, "sd15.safetensors"), join(tmp, "wrong-ref"), { configFrom: sdxlDir }),
    /sd1 checkpoint but --config-from .* is a sdxl folder/);
  const missing = new Map([...base].filter(([k]) => k !== "first_stage_model.quant_conv.bias"));
  writeSafetensorsSync(join(tmp, "missing.safetensors"), missing);
  assert.throws(() => importSingleFileCheckpoint(join(tmp, "missing.safetensors"), join(tmp, "missing-back"), { configFrom: sd15Dir }),
    /vae: missing quant_conv\.bias/);
});

test("export: a pixel-space model (no VAE) is refused with the reason", () => {
  assert.throws(() => exportSingleFileCheckpoint("models/emoji-base", join(tmp, "emoji.safetensors")), /no VAE \(a pixel-space model\)/);
});

test("SD1.5 built-in configs (import without --config-from): they parse, and list SD1.5's tensor counts", () => {
  const d = join(tmp, "sd15-defaults");
  const shapes = writeSd15Configs(d);
  // closed-form counts: UNet 686 (describeParameters); CLIP-L text 12 layers × 16 + 4 = 196; VAE
  // encoder 106 + decoder 138 + quant convs 4 = 248 (SD's 4-level VAE, 2 resnets per level)
  assert.equal(shapes.unet!.size, 686);
  assert.equal(shapes.text_encoder!.size, 196);
  assert.equal(shapes.vae!.size, 248);
  assert.deepEqual(shapes.vae!.get("encoder.mid_block.attentions.0.to_q.weight"), [512, 512]);
  assert.deepEqual(shapes.text_encoder!.get("text_model.embeddings.token_embedding.weight"), [49408, 768]);
  const json = (r: string) => JSON.parse(readFileSync(join(d, r), "utf8"));
  assert.equal(parseUNetConfig(json("unet/config.json")).config.crossAttentionDim, 768);
  assert.equal(clipTextConfigFromJson(json("text_encoder/config.json")).hiddenSize, 768);
  assert.equal(autoencoderKLConfigFromJson(json("vae/config.json")).scalingFactor, 0.18215);
  assert.equal(scheduleConfigFromDiffusers(json("scheduler/scheduler_config.json")).betaSchedule, "scaled_linear");
  assert.equal(ClipTokenizer.fromFolder(join(d, "tokenizer")).encode("a red apple on a table").join(" "), "49406 320 736 3055 525 320 2175 49407");
  // an SDXL file has no built-in configs
  assert.throws(() => importSingleFileCheckpoint(join(tmp, "sdxl.safetensors"), join(tmp, "sdxl-nodefaults")), /only SD1\.x has built-in configs.*--config-from/);
});

test("sd2 (an OpenCLIP, gelu text encoder): cond_stage_model.model open_clip names, round trip bit-identical", () => {
  const d = join(tmp, "sd2-like");
  cpSync(sd15Dir, d, { recursive: true });
  const tc = join(d, "text_encoder", "config.json");
  writeFileSync(tc, JSON.stringify({ ...JSON.parse(readFileSync(tc, "utf8")), hidden_act: "gelu" }));
  const first = join(tmp, "sd2.safetensors");
  const r = exportSingleFileCheckpoint(d, first);
  assert.equal(r.family, "sd2");
  const f = SafetensorsFile.open(first);
  try {
    assert.deepEqual(f.info("cond_stage_model.model.transformer.resblocks.2.attn.in_proj_bias").shape, [72]);
    assert.ok(f.has("cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight") && f.has("cond_stage_model.model.ln_final.bias"));
    assert.equal(f.keys().some((k) => k.startsWith("cond_stage_model.transformer.")), false);
  } finally {
    f.close();
  }
  // an extra open_clip layer (SD2 files keep the 24th layer diffusers leaves out) and logit_scale are skipped
  const withExtra = readAllRaw(first);
  for (const [k, t] of [...withExtra]) {
    if (k.startsWith("cond_stage_model.model.transformer.resblocks.2.")) withExtra.set(k.replace("resblocks.2.", "resblocks.3."), t);
  }
  withExtra.set("cond_stage_model.model.logit_scale", { dtype: "F32", shape: [], bytes: new Uint8Array(4) });
  writeSafetensorsSync(join(tmp, "sd2-extra.safetensors"), withExtra);
  const back = join(tmp, "sd2-back");
  const imp = importSingleFileCheckpoint(join(tmp, "sd2-extra.safetensors"), back, { configFrom: d });
  assert.equal(imp.family, "sd2");
  assert.ok(imp.skipped.some((s) => s.key === "cond_stage_model.model.logit_scale"));
  assert.deepEqual(imp.skipped.filter((s) => s.key.includes("resblocks")).map((s) => s.key), ["cond_stage_model.model.transformer.resblocks.3.*"]);
  assertSameFolder(d, back);
  const second = join(tmp, "sd2-again.safetensors");
  exportSingleFileCheckpoint(back, second);
  assert.ok(readFileSync(first).equals(readFileSync(second)));
});
