// LoRA formats (src/models/convert/lora-formats.ts): export → import is bit-identical for
// diffusers, peft and kohya (weights and per-layer alphas), kohya keys use the original-SD block
// names, files load into a model through the existing loadLoraStateDict path, keys that match
// nothing are listed, and a merged model computes what the LoRA-enabled model computed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsFile, writeSafetensorsSync, type RawTensor } from "../../../src/io/safetensors.js";
import { disposeTextToImageModel, loadModelFolder, type TextToImageModel } from "../../../src/models/pipeline.js";
import { toDiffusersConfig } from "../../../src/models/unet/index.js";
import { unetLayoutFromConfig } from "../../../src/models/convert/unet-names.js";
import {
  applyLoraWeights, assertAllMatched, dotsFromUnderscores, loraWeightsOf, readLoraFile, writeLoraFile,
  type LoraFormat, type LoraLayerWeights, type LoraWeights,
} from "../../../src/models/convert/lora-formats.js";
import { injectLora, loadLoraStateDict, loraLayers, mergeLora } from "../../../src/nn/lora.js";
import { setInitSeed } from "../../../src/nn/index.js";
import { Generator, noGrad, randn, tidy } from "../../../src/tensor/index.js";
import { referenceCase, relativeError } from "../../_reference.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-formats-"));
const sd15 = referenceCase("sd15-pipeline");
const sd15Dir = sd15.pipelineFolder();
const sdxlDir = referenceCase("sdxl-pipeline").pipelineFolder();
process.on("exit", () => { for (const d of [tmp, sd15Dir, sdxlDir]) rmSync(d, { recursive: true, force: true }); });

/** Adapters with non-zero B (a fresh LoRA is a no-op) and one layer with its own alpha. */
function randomLora(model: TextToImageModel, seed: number): void {
  setInitSeed(seed);
  injectLora(model.unet, { rank: 4, alpha: 2 });
  const g = new Generator(seed);
  noGrad(() => {
    for (const [, l] of loraLayers(model.unet)) tidy(() => l.lora_B.weight.copy_(randn(l.lora_B.weight.shape, g).mul(0.05)));
  });
  loraLayers(model.unet)[1]![1].alpha = 3;
}

function sameLayers(a: Map<string, LoraLayerWeights>, b: Map<string, LoraLayerWeights>, what: string): void {
  const same = (x: RawTensor, y: RawTensor) => x.dtype === y.dtype && x.shape.join() === y.shape.join() && Buffer.from(x.bytes).equals(Buffer.from(y.bytes));
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort(), what);
  for (const [p, l] of a) {
    const m = b.get(p)!;
    assert.ok(same(l.down, m.down) && same(l.up, m.up), `${what}: ${p} weights`);
    assert.equal(m.alpha, l.alpha, `${what}: ${p} alpha`);
  }
}

const model = loadModelFolder(sd15Dir);
randomLora(model, 1);
const layout = unetLayoutFromConfig(toDiffusersConfig(model.unet.config));
const original: LoraWeights = new Map([["unet", loraWeightsOf(model.unet)]]);

test("every format: export → import gives the same adapters bit for bit (and the same per-layer alphas)", () => {
  assert.equal(original.get("unet")!.size, 32); // 4 transformers (down 0, mid, up 1 × 2) × attn1/attn2 × q/k/v/out
  const outs: Record<LoraFormat, string> = { diffusers: join(tmp, "d.safetensors"), peft: join(tmp, "peft"), kohya: join(tmp, "k.safetensors") };
  for (const format of ["diffusers", "peft", "kohya"] as const) {
    writeLoraFile(original, format, outs[format], { unetLayout: layout });
    const back = readLoraFile(outs[format], { unetLayout: layout });
    assert.equal(back.format, format);
    assert.deepEqual(back.unmatched, []);
    sameLayers(original.get("unet")!, back.weights.get("unet")!, format);
  }
  // chained conversions come back unchanged too
  const k = readLoraFile(outs.kohya, { unetLayout: layout });
  writeLoraFile(k.weights, "peft", join(tmp, "peft2"));
  writeLoraFile(readLoraFile(join(tmp, "peft2")).weights, "diffusers", join(tmp, "d2.safetensors"));
  sameLayers(original.get("unet")!, readLoraFile(join(tmp, "d2.safetensors")).weights.get("unet")!, "kohya → peft → diffusers");
});

test("file layouts: diffusers keys + metadata, peft folder + adapter_config.json, kohya original-SD names with f32 alphas", () => {
  const d = SafetensorsFile.open(join(tmp, "d.safetensors"));
  assert.ok(d.has("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight"));
  const meta = JSON.parse(d.metadata.lora_adapter_metadata!) as Record<string, unknown>;
  assert.equal(meta["unet.r"], 4);
  assert.equal(meta["unet.lora_alpha"], 2);
  assert.equal(Object.keys(meta["unet.alpha_pattern"] as object).length, 1);
  d.close();
  const cfg = JSON.parse(readFileSync(join(tmp, "peft", "adapter_config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(cfg.peft_type, "LORA");
  assert.deepEqual(cfg.target_modules, ["to_k", "to_out.0", "to_q", "to_v"]);
  const p = SafetensorsFile.open(join(tmp, "peft", "adapter_model.safetensors"));
  assert.ok(p.keys().every((k) => k.startsWith("base_model.model.") && /\.lora_[AB]\.weight$/.test(k)));
  p.close();
  const k = SafetensorsFile.open(join(tmp, "k.safetensors"));
  try {
    // down_blocks.0.attentions.0 → input_blocks.1.1; up_blocks.1.attentions.1 → output_blocks.3.1; mid → middle_block.1
    for (const key of [
      "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight",
      "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_out_0.lora_up.weight",
      "lora_unet_output_blocks_3_1_transformer_blocks_0_attn2_to_v.alpha",
    ]) assert.ok(k.has(key), key);
    assert.deepEqual(k.info("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.alpha"), { dtype: "F32", shape: [], dataOffsets: k.info("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.alpha").dataOffsets });
    assert.equal(k.metadata.ss_network_dim, "4");
    assert.equal(k.keys().length, 32 * 3);
  } finally {
    k.close();
  }
  assert.equal(dotsFromUnderscores("output_blocks_2_1_transformer_blocks_0_ff_net_0_proj"), "output_blocks.2.1.transformer_blocks.0.ff.net.0.proj");
  assert.equal(dotsFromUnderscores("text_model_encoder_layers_11_self_attn_out_proj"), "text_model.encoder.layers.11.self_attn.out_proj");
});

test("a peft weights file without its adapter_config.json still carries the scale; kohya text-encoder prefixes follow the family", () => {
  const lone = join(tmp, "lone-adapter_model.safetensors");
  copyFileSync(join(tmp, "peft", "adapter_model.safetensors"), lone);
  const back = readLoraFile(lone);
  assert.equal(back.format, "peft");
  sameLayers(original.get("unet")!, back.weights.get("unet")!, "peft without config");
  const te: LoraWeights = new Map([["text_encoder", new Map([["text_model.encoder.layers.0.self_attn.q_proj", original.get("unet")!.values().next().value!]])]]);
  for (const [two, prefix] of [[true, "lora_te1_"], [false, "lora_te_"]] as const) {
    const out = join(tmp, `te-${two}.safetensors`);
    writeLoraFile(te, "kohya", out, { twoTextEncoders: two });
    const f = SafetensorsFile.open(out);
    assert.ok(f.has(`${prefix}text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight`), prefix);
    f.close();
    assert.deepEqual([...readLoraFile(out).weights.get("text_encoder")!.keys()], ["text_model.encoder.layers.0.self_attn.q_proj"]);
  }
});

test("loading: every format into a fresh model gives the adapters back (applyLoraWeights and the existing loadLoraStateDict)", () => {
  for (const file of [join(tmp, "k.safetensors"), join(tmp, "peft"), join(tmp, "d.safetensors")]) {
    const fresh = loadModelFolder(sd15Dir);
    try {
      const lf = readLoraFile(file, { unetLayout: layout });
      assertAllMatched(lf);
      applyLoraWeights(fresh.unet, lf.weights.get("unet")!, file);
      sameLayers(original.get("unet")!, loraWeightsOf(fresh.unet), file);
    } finally {
      disposeTextToImageModel(fresh);
    }
  }
  // the diffusers file also loads through the old entry point (uniform alpha from the metadata's lora_alpha)
  const fresh = loadModelFolder(sd15Dir);
  const f = SafetensorsFile.open(join(tmp, "d.safetensors"));
  const state = f.readAll();
  f.close();
  loadLoraStateDict(fresh.unet, state, { alpha: 2 });
  for (const t of state.values()) t.dispose();
  assert.equal(loraLayers(fresh.unet).length, 32);
  disposeTextToImageModel(fresh);
});

test("keys that match nothing are listed: unknown kohya names, non-LoRA tensors, a conv (SD1 proj_in) target", () => {
  const raw = (shape: number[]): RawTensor => ({ dtype: "F32", shape, bytes: new Uint8Array(4 * shape.reduce((a, b) => a * b, 1)) });
  writeSafetensorsSync(join(tmp, "bad.safetensors"), new Map([
    ["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight", raw([4, 32])],
    ["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_up.weight", raw([32, 4])],
    ["lora_unet_input_blocks_77_1_proj_in.lora_down.weight", raw([4, 32])],
    ["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_k.hada_w1_a", raw([4, 32])],
    ["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_v.lora_down.weight", raw([4, 32])],
  ]));
  const lf = readLoraFile(join(tmp, "bad.safetensors"), { unetLayout: layout });
  assert.deepEqual(lf.unmatched.sort(), [
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_k.hada_w1_a",
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_v.lora_down.weight",
    "lora_unet_input_blocks_77_1_proj_in.lora_down.weight",
  ]);
  assert.throws(() => assertAllMatched(lf), (e: Error) => lf.unmatched.every((k) => e.message.includes(k)));
  assert.throws(() => readLoraFile(join(tmp, "bad.safetensors")), /original-SD way.*--model/);
  // proj_in is a 1×1 conv in SD1: no Linear layer to adapt
  writeSafetensorsSync(join(tmp, "conv.safetensors"), new Map([
    ["lora_unet_input_blocks_1_1_proj_in.lora_down.weight", raw([4, 32])],
    ["lora_unet_input_blocks_1_1_proj_in.lora_up.weight", raw([32, 4])],
  ]));
  const fresh = loadModelFolder(sd15Dir);
  try {
    assert.throws(() => applyLoraWeights(fresh.unet, readLoraFile(join(tmp, "conv.safetensors"), { unetLayout: layout }).weights.get("unet")!, "conv.safetensors"),
      /match no Linear layer of the model: down_blocks\.0\.attentions\.0\.proj_in/);
  } finally {
    disposeTextToImageModel(fresh);
  }
});

test("merge: the merged UNet computes what the LoRA-enabled UNet computed (relative error < 1e-5)", () => {
  const m = loadModelFolder(sd15Dir);
  try {
    applyLoraWeights(m.unet, original.get("unet")!, "test");
    const args = [sd15.tensor("unet_sample"), sd15.tensor("unet_timestep"), sd15.tensor("unet_encoder_hidden_states")] as const;
    const withLora = noGrad(() => m.unet.forward(...args));
    const base = noGrad(() => { for (const [, l] of loraLayers(m.unet)) l.enabled = false; const y = m.unet.forward(...args); for (const [, l] of loraLayers(m.unet)) l.enabled = true; return y; });
    assert.ok(relativeError(base.toArray(), withLora.toArray()) > 1e-3, "the adapters change the output");
    assert.equal(mergeLora(m.unet), 32);
    const merged = noGrad(() => m.unet.forward(...args));
    const err = relativeError(merged.toArray(), withLora.toArray());
    assert.ok(err < 1e-5, `merged vs LoRA: ${err}`); // measured 5.7e-7
  } finally {
    disposeTextToImageModel(m);
  }
});

test("SDXL: UNet and both text encoders' adapters in kohya (input_blocks names, lora_te1_/lora_te2_) round-trip bit for bit", () => {
  const x = loadModelFolder(sdxlDir);
  try {
    setInitSeed(3);
    injectLora(x.unet, { rank: 2, alpha: 1 });
    injectLora(x.textEncoder, { rank: 2, alpha: 2, targets: ["q_proj", "v_proj"] });
    injectLora(x.textEncoder2!, { rank: 2, alpha: 2, targets: ["q_proj", "out_proj", "fc1"] });
    const w: LoraWeights = new Map([["unet", loraWeightsOf(x.unet)], ["text_encoder", loraWeightsOf(x.textEncoder)], ["text_encoder_2", loraWeightsOf(x.textEncoder2!)]]);
    const xl = unetLayoutFromConfig(JSON.parse(readFileSync(join(sdxlDir, "unet", "config.json"), "utf8")));
    for (const format of ["kohya", "diffusers"] as const) {
      const out = join(tmp, `xl-${format}.safetensors`);
      writeLoraFile(w, format, out, { unetLayout: xl });
      const back = readLoraFile(out, { unetLayout: xl });
      assert.deepEqual(back.unmatched, []);
      for (const c of ["unet", "text_encoder", "text_encoder_2"] as const) sameLayers(w.get(c)!, back.weights.get(c)!, `${format} ${c}`);
    }
    const k = SafetensorsFile.open(join(tmp, "xl-kohya.safetensors"));
    assert.ok(k.has("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_down.weight"));
    assert.ok(k.has("lora_unet_output_blocks_2_1_transformer_blocks_0_attn1_to_out_0.lora_up.weight"));
    assert.ok(k.has("lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"));
    assert.ok(k.has("lora_te2_text_model_encoder_layers_2_mlp_fc1.alpha"));
    k.close();
    assert.throws(() => writeLoraFile(w, "peft", join(tmp, "xl-peft")), /peft format holds one model's adapters/);
    assert.equal(existsSync(join(tmp, "xl-peft")), false);
  } finally {
    disposeTextToImageModel(x);
  }
});

test.after(() => disposeTextToImageModel(model));

test("the existing loadLoraStateDict (eval --tuned) reads kohya files with original-SD names too, alphas per layer", () => {
  const fresh = loadModelFolder(sd15Dir);
  const f = SafetensorsFile.open(join(tmp, "k.safetensors"));
  const state = f.readAll();
  f.close();
  try {
    loadLoraStateDict(fresh.unet, state);
    sameLayers(original.get("unet")!, loraWeightsOf(fresh.unet), "loadLoraStateDict(kohya)");
    state.set("lora_unet_input_blocks_9_1_transformer_blocks_0_attn1_to_q.lora_down.weight", state.values().next().value!);
    assert.throws(() => loadLoraStateDict(loadModelFolder(sd15Dir).unet, state), /1 kohya LoRA key\(s\) match no Linear layer of this UNet: lora_unet_input_blocks_9_1/);
  } finally {
    for (const t of new Set(state.values())) t.dispose();
    disposeTextToImageModel(fresh);
  }
});
