// The conversion commands end to end through runCli: `train --lora-format`, `lora convert`,
// `merge` (LoRA folded into a full folder + single file) and `export-checkpoint` /
// `import-checkpoint`, on the tiny sd15 reference pipeline and the train-fixture pixel model.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliRunner } from "./_capture.js";
import { commands } from "../../src/cli/commands/index.js";
import { SafetensorsFile } from "../../src/io/safetensors.js";
import { disposeTextToImageModel, loadModelFolder } from "../../src/models/pipeline.js";
import { toDiffusersConfig } from "../../src/models/unet/index.js";
import {
  applyLoraWeights, loraWeightsOf, readLoraFile, unetLayoutFromConfig, writeLoraFile, type LoraLayerWeights, type LoraWeights,
} from "../../src/models/convert/index.js";
import { injectLora, loraLayers } from "../../src/nn/lora.js";
import { setInitSeed } from "../../src/nn/index.js";
import { Generator, noGrad, randn, tidy } from "../../src/tensor/index.js";
import { referenceCase, relativeError } from "../_reference.js";
import { brightJsonl, tinyModelFolder } from "./train-fixture.js";

const cli = cliRunner(commands as never);
const dir = mkdtempSync(join(tmpdir(), "dpo-convert-cli-"));
const sd15 = referenceCase("sd15-pipeline");
const sd15Dir = sd15.pipelineFolder();
process.on("exit", () => { rmSync(dir, { recursive: true, force: true }); rmSync(sd15Dir, { recursive: true, force: true }); });

function sameLayers(a: Map<string, LoraLayerWeights>, b: Map<string, LoraLayerWeights>, what: string): void {
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort(), what);
  for (const [p, l] of a) {
    const m = b.get(p)!;
    assert.ok(Buffer.from(l.down.bytes).equals(Buffer.from(m.down.bytes)) && Buffer.from(l.up.bytes).equals(Buffer.from(m.up.bytes)), `${what}: ${p}`);
    assert.equal(m.alpha, l.alpha, `${what}: ${p} alpha`);
  }
}

// a LoRA for the sd15 reference UNet with non-zero B, saved in diffusers format
const loraFile = join(dir, "sd15-lora.safetensors");
const layout = unetLayoutFromConfig(JSON.parse(readFileSync(join(sd15Dir, "unet", "config.json"), "utf8")));
{
  const m = loadModelFolder(sd15Dir);
  setInitSeed(5);
  injectLora(m.unet, { rank: 4, alpha: 4 });
  const g = new Generator(5);
  noGrad(() => { for (const [, l] of loraLayers(m.unet)) tidy(() => l.lora_B.weight.copy_(randn(l.lora_B.weight.shape, g).mul(0.05))); });
  writeLoraFile(new Map([["unet", loraWeightsOf(m.unet)]]), "diffusers", loraFile);
  disposeTextToImageModel(m);
}
const original = readLoraFile(loraFile).weights.get("unet")!;

test("lora convert: diffusers → kohya → peft → diffusers keeps every tensor and alpha; kohya needs --model", async () => {
  const kohya = join(dir, "k.safetensors");
  let r = await cli(["lora", "convert", "--in", loraFile, "--to", "kohya", "--out", kohya, "--model", sd15Dir, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.json().layers, { unet: 32 });
  assert.equal(r.json().from, "diffusers");
  assert.ok(SafetensorsFile.open(kohya).has("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight"));
  r = await cli(["lora", "convert", "--in", kohya, "--to", "peft", "--out", join(dir, "peft"), "--model", sd15Dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /kohya → peft: 32 unet layers/);
  assert.ok(existsSync(join(dir, "peft", "adapter_config.json")));
  r = await cli(["lora", "convert", "--in", join(dir, "peft"), "--to", "diffusers", "--out", join(dir, "back.safetensors")]);
  assert.equal(r.code, 0, r.stderr);
  sameLayers(original, readLoraFile(join(dir, "back.safetensors")).weights.get("unet")!, "round trip");
  sameLayers(original, readLoraFile(kohya, { unetLayout: layout }).weights.get("unet")!, "kohya");

  r = await cli(["lora", "convert", "--in", kohya, "--to", "diffusers", "--out", join(dir, "x.safetensors")]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /original-SD way.*--model/);
  // checked against --model's layers: 24 of the sd15 LoRA's 32 layers do not exist in the SDXL UNet (its mid block does)
  const sdxlDir = referenceCase("sdxl-pipeline").pipelineFolder();
  r = await cli(["lora", "convert", "--in", join(dir, "back.safetensors"), "--to", "peft", "--out", join(dir, "p3"), "--model", sdxlDir]);
  rmSync(sdxlDir, { recursive: true, force: true });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /24 adapted layer\(s\) match no layer of --model .*unet: down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn1\.to_k/);
  assert.equal(existsSync(join(dir, "p3")), false);
  r = await cli(["lora", "convert", "--in", loraFile, "--to", "a1111", "--out", join(dir, "x.safetensors")]);
  assert.match(r.stderr, /--to must be one of diffusers, peft, kohya/);
  // the sd1 preset numbers blocks like the real SD1.5, not like this tiny two-level UNet
  r = await cli(["lora", "convert", "--in", loraFile, "--to", "kohya", "--out", join(dir, "y.safetensors"), "--model", "sd1"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(SafetensorsFile.open(join(dir, "y.safetensors")).has("lora_unet_output_blocks_3_1_transformer_blocks_0_attn1_to_q.lora_down.weight"));
});

test("merge: the merged folder computes what base + LoRA computes (scale 0.5), and --single-file writes a checkpoint", async () => {
  const out = join(dir, "merged");
  const single = join(dir, "merged.safetensors");
  const r = await cli(["merge", "--model", sd15Dir, "--lora", join(dir, "k.safetensors"), "--scale", "0.5", "--out", out, "--single-file", single, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.json().merged, { unet: 32 });
  assert.equal(r.json().format, "kohya");
  const args = [sd15.tensor("unet_sample"), sd15.tensor("unet_timestep"), sd15.tensor("unet_encoder_hidden_states")] as const;
  const withLora = loadModelFolder(sd15Dir);
  const merged = loadModelFolder(out);
  try {
    applyLoraWeights(withLora.unet, original, loraFile);
    for (const [, l] of loraLayers(withLora.unet)) l.alpha *= 0.5;
    const a = noGrad(() => withLora.unet.forward(...args));
    const b = noGrad(() => merged.unet.forward(...args));
    const err = relativeError(b.toArray(), a.toArray());
    assert.ok(err < 1e-5, `merged vs base + 0.5 · LoRA: ${err}`); // measured 6.4e-7
    assert.equal(loraLayers(merged.unet).length, 0);
  } finally {
    disposeTextToImageModel(withLora);
    disposeTextToImageModel(merged);
  }
  const f = SafetensorsFile.open(single);
  assert.ok(f.has("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"));
  f.close();
  const bad = await cli(["merge", "--model", sd15Dir, "--lora", join(dir, "nothing.safetensors"), "--out", join(dir, "m2")]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /nothing\.safetensors does not exist/);
});

test("export-checkpoint → import-checkpoint → export-checkpoint: byte-identical single files", async () => {
  const a = join(dir, "a.safetensors");
  let r = await cli(["export-checkpoint", "--model", sd15Dir, "--out", a, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.json().counts, { unet: 208, vae: 176, text_encoder: 52 });
  r = await cli(["import-checkpoint", "--in", a, "--config-from", sd15Dir, "--out", join(dir, "imported")]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /sd1: 208 unet, 176 vae, 52 text_encoder tensors/);
  const b = join(dir, "b.safetensors");
  r = await cli(["export-checkpoint", "--model", join(dir, "imported"), "--out", b]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(readFileSync(a).equals(readFileSync(b)));
  r = await cli(["export-checkpoint", "--model", sd15Dir, "--out", join(dir, "h.safetensors"), "--dtype", "f16", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(SafetensorsFile.open(join(dir, "h.safetensors")).info("model.diffusion_model.out.2.weight").dtype, "F16");
  // without --config-from an SD1 file is checked against SD1.5's configs, which this tiny one does not fit
  r = await cli(["import-checkpoint", "--in", a, "--out", join(dir, "x")]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no place in a sd1 folder laid out as SD1\.5's built-in configs \(give --config-from for other sizes\): model\.diffusion_model\.input_blocks\.2\.0\.op\.bias/);
  assert.equal(existsSync(join(dir, "x")), false);
});

test("train --lora-format kohya / peft: final/ holds the diffusers file and the requested format, with equal adapters", async () => {
  const model = tinyModelFolder(join(dir, "tiny"));
  const pairs = await brightJsonl(join(dir, "data"), 2);
  const tinyLayout = unetLayoutFromConfig(JSON.parse(readFileSync(join(model, "unet", "config.json"), "utf8")));
  for (const format of ["kohya", "peft"] as const) {
    const out = join(dir, `run-${format}`);
    const r = await cli([
      "train", "--model", model, "--data", pairs, "--out", out, "--batch", "2", "--steps", "1", "--warmup", "0", "--lr", "1e-3",
      "--no-scale-lr", "--workers", "0", "--lora", "--lora-rank", "2", "--lora-alpha", "1", "--lora-format", format, "--checkpoint-every", "0",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const final = join(out, "final");
    const diffusers = readLoraFile(join(final, "pytorch_lora_weights.safetensors")).weights.get("unet")!;
    const other = format === "kohya" ? join(final, "lora_kohya.safetensors") : final;
    const w = readLoraFile(format === "peft" ? join(final, "adapter_model.safetensors") : other, { unetLayout: tinyLayout });
    assert.equal(w.format, format);
    sameLayers(diffusers, w.weights.get("unet")!, format);
    assert.ok([...diffusers.values()].every((l) => l.alpha === 1));
    const cfg = JSON.parse(readFileSync(join(final, "training_config.json"), "utf8")) as { lora: { format: string } };
    assert.equal(cfg.lora.format, format);
  }
  const r = await cli(["train", "--model", model, "--data", pairs, "--out", join(dir, "bad"), "--lora", "--lora-format", "a1111"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /lora-format/);
});
