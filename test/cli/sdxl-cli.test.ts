// `sample` and `train` from the CLI on the tiny SDXL folder (../shared/data/reference-models/
// sdxl-pipeline: StableDiffusionXLPipeline with two CLIP encoders, a text_time UNet and a VAE;
// 64×64 images, 8×8 latents): LoRA and full fine-tuning, a resumed run that reproduces the
// uninterrupted one, and outputs that load (the LoRA file under diffusers' `unet.` names, the
// full run as an SDXL model folder).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { cliRunner } from "./_capture.js";
import { commands } from "../../src/cli/commands/index.js";
import { train } from "../../src/cli/commands/train.js";
import { brightJsonl } from "./train-fixture.js";
import { referenceCase } from "../_reference.js";
import { SafetensorsFile } from "../../src/io/safetensors.js";
import { disposeTextToImageModel, isSdxlModel, loadModelFolder } from "../../src/models/pipeline.js";
import { loadModelPair } from "../../src/eval/models.js";
import { listCheckpoints } from "../../src/train/checkpoint.js";

const cli = cliRunner(commands as Parameters<typeof cliRunner>[0]);
const dir = mkdtempSync(join(tmpdir(), "dpo-sdxl-cli-"));
const modelDir = referenceCase("sdxl-pipeline").pipelineFolder();
test.after(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(modelDir, { recursive: true, force: true });
});
let pairs = "";

const common = (out: string): string[] => [
  "train", "--model", modelDir, "--data", pairs, "--out", out, "--batch", "2", "--lr", "1e-3", "--no-scale-lr",
  "--warmup", "0", "--beta", "5000", "--workers", "0",
];
const lossesOf = (out: string): number[] =>
  readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; loss: number })
    .filter((l) => l.type === "step").map((l) => l.loss);

test("setup: 64×64 JSONL pairs", async () => {
  pairs = await brightJsonl(join(dir, "data"), 4, 64);
});

test("sdxl sample: euler, guidance 5 → 64×64 PNGs", async () => {
  const out = join(dir, "samples");
  const r = await cli(["sample", "--model", modelDir, "--prompt", "a red apple on a table", "--sampler", "euler", "--guidance", "5",
    "--steps", "3", "--num", "2", "--out", out, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const j = r.json();
  assert.equal(j.size, 64);
  assert.equal(j.files.length, 2);
  const meta = await sharp(j.files[0]).metadata();
  assert.deepEqual([meta.width, meta.height], [64, 64]);
  const [a, b] = await Promise.all(j.files.map((f: string) => sharp(f).raw().toBuffer()));
  assert.notDeepEqual(a, b, "two seeds, two images");
  // micro-conditioning flags reach the UNet's time ids: another original size, another image
  const out2 = join(dir, "samples-micro");
  const r2 = await cli(["sample", "--model", modelDir, "--prompt", "a red apple on a table", "--sampler", "euler", "--guidance", "5",
    "--steps", "3", "--num", "1", "--original-size", "512,384", "--crop-top-left", "16,0", "--out", out2, "--json"]);
  assert.equal(r2.code, 0, r2.stderr);
  const c = await sharp(r2.json().files[0]).raw().toBuffer();
  assert.notDeepEqual(c, a, "other time ids, other image (same seed)");
  const bad = await cli(["sample", "--model", modelDir, "--prompt", "x", "--original-size", "512", "--out", out2]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--original-size must be two integers/);
});

test("sdxl train --lora: finite losses from ln 2, a diffusers LoRA file with unet. keys that loads beside the base", async () => {
  const out = join(dir, "lora");
  const r = await cli([...common(out), "--steps", "3", "--lora", "--lora-rank", "2", "--checkpoint-every", "1"]);
  assert.equal(r.code, 0, r.stderr);
  const losses = lossesOf(out);
  assert.equal(losses.length, 3);
  assert.ok(Math.abs(losses[0]! - Math.LN2) < 1e-6, `first loss ${losses[0]} is ln 2 (policy = reference)`);
  assert.ok(losses.every(Number.isFinite));
  assert.ok(new Set(losses).size > 1, "the adapters move the loss");
  const f = SafetensorsFile.open(join(out, "final", "pytorch_lora_weights.safetensors"));
  try {
    const keys = f.keys();
    assert.ok(keys.length > 0 && keys.every((k) => /^unet\..*\.(to_q|to_k|to_v|to_out\.0)\.lora\.(down|up)\.weight$/.test(k)), keys[0]);
  } finally {
    f.close();
  }
  assert.equal(JSON.parse(readFileSync(join(out, "final", "training_config.json"), "utf8")).optimizer.kind, "adamw", "LoRA keeps AdamW");
  const pair = loadModelPair(modelDir, out);
  try {
    assert.equal(pair.kind, "lora");
  } finally {
    pair.dispose();
  }
});

test("sdxl train --gradient-checkpointing: the LoRA run's losses (gradients equal up to float rounding)", async () => {
  const out = join(dir, "lora-ckpt");
  const r = await cli([...common(out), "--steps", "3", "--lora", "--lora-rank", "2", "--checkpoint-every", "0", "--gradient-checkpointing"]);
  assert.equal(r.code, 0, r.stderr);
  const [a, b] = [lossesOf(join(dir, "lora")), lossesOf(out)];
  assert.equal(b.length, 3);
  // step 1: the same forward. After that the runs drift although the gradients agree to ~1e-6
  // (test/models/unet-checkpoint.test.ts checks them): AdamW's first update is ≈ lr·sign(g), so
  // float-noise-sized gradient components take full lr-sized steps in whatever direction their
  // rounding gives, and the rounding depends on the BLAS kernel. Measured step 2 / step 3 gaps:
  // 1.3e-6 / 3.6e-4 with OpenBLAS SkylakeX kernels, 2.1e-4 / 4.0e-5 with OPENBLAS_CORETYPE=Haswell; the bounds keep ≥ 9× over those.
  assert.equal(b[0], a[0]);
  assert.ok(Math.abs(a[1]! - b[1]!) <= 2e-3, `step 2: ${a[1]} vs ${b[1]}`);
  assert.ok(Math.abs(a[2]! - b[2]!) <= 2e-2, `step 3: ${a[2]} vs ${b[2]}`);
});

test("sdxl train: a run resumed at step 2 reproduces the uninterrupted run's losses", async () => {
  const split = join(dir, "split");
  const a = await cli([...common(split), "--steps", "2", "--lora", "--lora-rank", "2", "--checkpoint-every", "1"]);
  assert.equal(a.code, 0, a.stderr);
  assert.deepEqual(listCheckpoints(split).map(([s]) => s).at(-1), 2);
  const summary = await train({ out: split, resume: true, steps: "3", nproc: "1" });
  assert.equal(summary?.step, 3);
  assert.deepEqual(lossesOf(split), lossesOf(join(dir, "lora")));
});

test("sdxl train --full: the final folder is an SDXL model folder that loads, with a changed UNet", async () => {
  const out = join(dir, "full");
  const r = await cli([...common(out), "--steps", "2", "--full", "--checkpoint-every", "0", "--validate-every", "2"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(lossesOf(out).every(Number.isFinite));
  assert.ok(existsSync(join(out, "validation", "step-000002.png")), "the SDXL validation grid (zero-embedding negatives)");
  // SDXL full fine-tuning defaults to the official recipe's Adafactor (and 200 warmup steps; --warmup 0 wins here)
  const saved = JSON.parse(readFileSync(join(out, "final", "training_config.json"), "utf8"));
  assert.deepEqual([saved.optimizer.kind, saved.warmupSteps], ["adafactor", 0]);
  const tuned = loadModelFolder(join(out, "final"));
  const base = loadModelFolder(modelDir);
  try {
    assert.equal(isSdxlModel(tuned), true);
    assert.ok(existsSync(join(out, "final", "text_encoder_2", "model.safetensors")));
    const index = JSON.parse(readFileSync(join(out, "final", "model_index.json"), "utf8"));
    assert.equal(index._class_name, "StableDiffusionXLPipeline");
    const w = "up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    const diff = tuned.unet.stateDict().get(w)!.sub(base.unet.stateDict().get(w)!).abs().amax().item();
    assert.ok(diff > 0, "the UNet was updated");
  } finally {
    disposeTextToImageModel(tuned);
    disposeTextToImageModel(base);
  }
});

test("sdxl cache → train --data CACHE: trains without the encoders, resumes to the uninterrupted losses, refuses another model", async () => {
  const cacheDir = join(dir, "cache");
  const c = await cli(["cache", "--model", modelDir, "--data", pairs, "--out", cacheDir, "--batch", "3", "--json"]);
  assert.equal(c.code, 0, c.stderr);
  const m = c.json();
  assert.deepEqual([m.pairs, m.prompts, m.sdxl, m.resolution], [4, 5, true, 64]); // 4 prompts + ""
  const fromCache = (out: string) => common(out).map((x) => (x === pairs ? cacheDir : x));
  const straight = join(dir, "cached");
  const a = await cli([...fromCache(straight), "--steps", "3", "--lora", "--lora-rank", "2", "--checkpoint-every", "0"]);
  assert.equal(a.code, 0, a.stderr);
  const losses = lossesOf(straight);
  assert.equal(losses.length, 3);
  assert.ok(Math.abs(losses[0]! - Math.LN2) < 1e-6 && losses.every(Number.isFinite));
  // the step-equality of cached and live data is checked in test/train/cache.test.ts
  const split = join(dir, "cached-split");
  const b = await cli([...fromCache(split), "--steps", "2", "--lora", "--lora-rank", "2", "--checkpoint-every", "1"]);
  assert.equal(b.code, 0, b.stderr);
  const resumed = await train({ out: split, resume: true, steps: "3", nproc: "1" });
  assert.equal(resumed?.step, 3);
  assert.deepEqual(lossesOf(split), losses);
  const other = await cli([...fromCache(join(dir, "bad")).map((x) => (x === modelDir ? join(dir, "full", "final") : x)), "--steps", "1"]);
  assert.equal(other.code, 1);
  assert.match(other.stderr, /was encoded with the model .* not --model/);
});
