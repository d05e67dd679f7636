// `diffusion-dpo train` end to end through runCli, on a tiny model folder and JSONL pairs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineCommand } from "citty";
import { runCli } from "../../src/cli/run.js";
import { commands } from "../../src/cli/commands/index.js";
import { train } from "../../src/cli/commands/train.js";
import { SafetensorsFile } from "../../src/io/safetensors.js";
import { loadModelFolder, disposeTextToImageModel } from "../../src/models/pipeline.js";
import { LORA_ADAPTER_METADATA_KEY } from "../../src/nn/lora.js";
import { listCheckpoints } from "../../src/train/checkpoint.js";
import { loadModelPair } from "../../src/eval/models.js";
import { Generator, noGrad, randn, tensor } from "../../src/tensor/index.js";
import { brightJsonl, tinyModelFolder } from "./train-fixture.js";

const root = defineCommand({ meta: { name: "diffusion-dpo" }, subCommands: commands });
const dir = mkdtempSync(join(tmpdir(), "dpo-cli-"));
const modelDir = tinyModelFolder(join(dir, "model"));
let pairs = "";

/**
 * Runs the CLI in-process; returns the exit code and stderr (errors and progress). stdout is left
 * alone: node's test runner reports through it, so --json output is checked in train-nproc.test.ts
 * (a child process) and summaries here through `train()`.
 */
async function cli(...argv: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = "";
  const err = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string | Uint8Array) => { stderr += String(s); return true; }) as typeof process.stderr.write;
  try {
    const code = await runCli(root, argv, { stdout: () => {}, stderr: (s) => { stderr += s; } });
    return { code, stderr };
  } finally {
    process.stderr.write = err;
  }
}

const common = (out: string): string[] => [
  "train", "--model", modelDir, "--data", pairs, "--out", out, "--batch", "2", "--lr", "1e-4", "--no-scale-lr",
  "--warmup", "0", "--beta", "1000", "--workers", "0",
];
const lossesOf = (out: string): number[] =>
  readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; loss: number })
    .filter((l) => l.type === "step").map((l) => l.loss);

test("setup: JSONL pairs", async () => {
  pairs = await brightJsonl(join(dir, "data"));
});

test("LoRA run: flags win over the config file; checkpoints, metrics log, resolved config and a diffusers LoRA file", async () => {
  const out = join(dir, "lora");
  const yml = join(dir, "run.yaml");
  writeFileSync(yml, "maxSteps: 5\nmethod: dpo\nlora:\n  rank: 4\ncheckpointEvery: 1\nkeepCheckpoints: 2\n");
  const r = await cli(...common(out), "--config", yml, "--steps", "3", "--lora", "--lora-alpha", "2");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /train .*3\/3 .*loss \d\.\d{4} acc \d\.\d{4}/, "progress with loss and implicitAcc on stderr");
  assert.match(r.stderr, /ln 2/);
  assert.match(r.stderr, /done: 3 steps/);
  assert.deepEqual(listCheckpoints(out).map(([s]) => s), [2, 3], "--steps beats the file's maxSteps; keepCheckpoints 2 from the file");
  const saved = JSON.parse(readFileSync(join(out, "final", "training_config.json"), "utf8")) as Record<string, any>;
  assert.equal(saved.model, modelDir);
  assert.equal(saved.data.path, pairs);
  assert.equal(saved.outputDir, out);
  assert.deepEqual([saved.finetune, saved.lora.rank, saved.lora.alpha, saved.maxSteps, saved.beta], ["lora", 4, 2, 3, 1000]);
  const losses = lossesOf(out);
  assert.equal(losses.length, 3);
  assert.ok(Math.abs(losses[0]! - Math.LN2) < 1e-6, "the first logged loss is ln 2");
  assert.ok(losses.every(Number.isFinite));
  const f = SafetensorsFile.open(join(out, "final", "pytorch_lora_weights.safetensors"));
  try {
    assert.ok(f.keys().every((k) => /^unet\..*\.lora\.(down|up)\.weight$/.test(k)));
    assert.equal(JSON.parse(f.metadata[LORA_ADAPTER_METADATA_KEY]!)["unet.lora_alpha"], 2);
  } finally {
    f.close();
  }
  // the run folder loads as a tuned model beside its base (what `eval` and `sample` do)
  const pair = loadModelPair(modelDir, out);
  try {
    assert.equal(pair.kind, "lora");
    assert.deepEqual([pair.source.lora?.rank, pair.source.lora?.alpha], [4, 2]);
    const x = randn([1, 3, 8, 8], new Generator(0));
    const c = randn([1, 4, 64], new Generator(1));
    const t = tensor(new BigInt64Array([500n]), [1]);
    const diff = noGrad(() => pair.denoiser("tuned")(x, t, c).sub(pair.denoiser("base")(x, t, c)).abs().amax().item());
    assert.ok(diff > 0, "the trained adapters change the output");
  } finally {
    pair.dispose();
  }
});

test("--resume continues from the latest checkpoint with its saved settings and reproduces the uninterrupted losses", async () => {
  const straight = join(dir, "lora");
  const split = join(dir, "split");
  const yml = join(dir, "run.yaml");
  const b = await cli(...common(split), "--config", yml, "--steps", "2", "--lora", "--lora-alpha", "2");
  assert.equal(b.code, 0, b.stderr);
  // only --out, --resume and the step count: model, data, LoRA, β, lr … come from the checkpoint
  const summary = await train({ out: split, resume: true, steps: "3", nproc: "1" });
  assert.ok(summary !== null);
  assert.equal(summary.step, 3);
  assert.match(summary.resumedFrom ?? "", /step-000002$/);
  assert.equal(summary.finalPath, join(split, "final"));
  assert.ok(Number.isFinite(summary.last?.loss) && summary.pairsPerSec > 0);
  assert.deepEqual(lossesOf(split), lossesOf(straight));
});

test("full fine-tuning writes a complete model folder that loads", async () => {
  const out = join(dir, "full");
  const r = await cli(...common(out), "--steps", "1", "--full", "--checkpoint-every", "0");
  assert.equal(r.code, 0, r.stderr);
  const m = loadModelFolder(join(out, "final"));
  assert.equal(m.unet.config.sampleSize, 8);
  disposeTextToImageModel(m);
  assert.ok(existsSync(join(out, "final", "training_config.json")));
});

test("clear errors: missing model folder, empty data, bad flags, unknown config keys", async () => {
  const out = join(dir, "errors");
  const noModel = await cli("train", "--model", join(dir, "nope"), "--data", pairs, "--out", out);
  assert.equal(noModel.code, 1);
  assert.match(noModel.stderr, /--model .*nope: no such folder/);
  assert.doesNotMatch(noModel.stderr, /--debug/, "a usage error, not a crash");

  const empty = join(dir, "empty.jsonl");
  writeFileSync(empty, "");
  const e = await cli("train", "--model", modelDir, "--data", empty, "--out", out);
  assert.equal(e.code, 1);
  assert.match(e.stderr, /--data .*empty\.jsonl: holds no usable preference pairs/);

  const few = await cli("train", "--model", modelDir, "--data", pairs, "--out", out, "--batch", "7");
  assert.match(few.stderr, /6 usable pairs, fewer than one batch of 7/);

  const noData = await cli("train", "--model", modelDir, "--out", out);
  assert.match(noData.stderr, /--data is required/);
  const missing = await cli("train", "--model", modelDir, "--data", join(dir, "missing.jsonl"), "--out", out);
  assert.match(missing.stderr, /--data .*missing\.jsonl/);

  const badBeta = await cli("train", "--model", modelDir, "--data", pairs, "--beta", "lots");
  assert.match(badBeta.stderr, /flag --beta: "beta"/);
  const badRank = await cli("train", "--model", modelDir, "--data", pairs, "--lora-rank", "0");
  assert.match(badRank.stderr, /flag --lora-rank: "lora.rank"/);
  const unknown = await cli("train", "--betta", "3");
  assert.match(unknown.stderr, /unknown option --betta/);
  const clash = await cli("train", "--lora", "--finetune", "full");
  assert.match(clash.stderr, /disagree/);
  const nproc = await cli("train", "--nproc", "0");
  assert.match(nproc.stderr, /--nproc must be a positive integer/);

  const yml = join(dir, "bad.yaml");
  writeFileSync(yml, "betta: 3\n");
  const badFile = await cli("train", "--config", yml, "--data", pairs);
  assert.match(badFile.stderr, /config file .*bad\.yaml: unknown key "betta"/);
});
