import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ConfigError,
  defaultTrainConfig,
  effectiveLearningRate,
  loadTrainConfig,
  parseTrainConfig,
  type TrainConfig,
} from "../../src/config/train.js";

const dir = mkdtempSync(join(tmpdir(), "dpo-config-"));

test("defaults follow the official recipe", () => {
  const c = defaultTrainConfig();
  assert.equal(c.beta, 5000);
  assert.equal(c.method, "dpo");
  assert.equal(c.sftWeight, 0, "the paper's loss: no SFT term");
  assert.equal(c.promptDropout, 0.2);
  assert.equal(c.maxGradNorm, 1.0);
  assert.equal(c.lrSchedule, "constant_with_warmup");
  assert.deepEqual(c.optimizer, { kind: "adamw", betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, clipThreshold: 1 });
  assert.deepEqual(c.lora.targets, ["to_q", "to_k", "to_v", "to_out.0"]);
  // 1e-8 per pair × (1 pair × 128 accumulation × 16 GPUs) = 2.048e-5, the official SD1.5 lr
  const official = { ...c, batchSize: 1, gradientAccumulation: 128 } satisfies TrainConfig;
  assert.ok(Math.abs(effectiveLearningRate(official, 16) - 2.048e-5) < 1e-18);
  assert.equal(effectiveLearningRate({ ...c, scaleLr: false, learningRate: 3e-6 }), 3e-6);
});

test("defaults < file < flags, JSON and YAML, dotted and nested flags with string coercion", () => {
  const yml = join(dir, "run.yaml");
  writeFileSync(yml, "beta: 2000\nmethod: hinge\nlora:\n  rank: 4\nbatchSize: 2\n");
  const json = join(dir, "run.json");
  writeFileSync(json, JSON.stringify({ beta: 2500, optimizer: { kind: "adafactor" } }));
  const a = loadTrainConfig({ file: yml });
  assert.equal(a.beta, 2000);
  assert.equal(a.method, "hinge");
  assert.equal(a.lora.rank, 4);
  assert.equal(a.lora.alpha, 8, "nested defaults survive a partial nested object");
  const b = loadTrainConfig({
    file: yml,
    flags: { beta: "3000", "lora.alpha": "16", finetune: "lora", resume: "true", outputDir: "123", "optimizer.betas": "[0.9, 0.99]", validation: { every: "5" } },
  });
  assert.equal(b.beta, 3000);
  assert.equal(b.lora.rank, 4);
  assert.equal(b.lora.alpha, 16);
  assert.equal(b.finetune, "lora");
  assert.equal(b.resume, true);
  assert.equal(b.outputDir, "123", "a string option stays a string");
  assert.deepEqual(b.optimizer.betas, [0.9, 0.99]);
  assert.equal(b.validation.every, 5);
  assert.equal(loadTrainConfig({ flags: { resume: "runs/x/checkpoints/step-000010" } }).resume, "runs/x/checkpoints/step-000010");
  const c = loadTrainConfig({ file: json });
  assert.equal(c.optimizer.kind, "adafactor");
  assert.equal(c.beta, 2500);
});

test("unknown keys and wrong types are errors naming the key and the source", () => {
  const yml = join(dir, "bad.yaml");
  writeFileSync(yml, "betta: 2000\nlora:\n  rnk: 3\n");
  assert.throws(() => loadTrainConfig({ file: yml }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, new RegExp(`config file ${yml.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: unknown key "betta"`));
    assert.match(err.message, /unknown key "lora.rnk"/);
    return true;
  });
  assert.throws(() => loadTrainConfig({ flags: { beta: "lots" } }), /flag --beta: "beta": .*number/i);
  assert.throws(() => loadTrainConfig({ flags: { method: "dpo2" } }), /"method"/);
  assert.throws(() => loadTrainConfig({ flags: { batchSize: "1.5" } }), /"batchSize"/);
  assert.throws(() => loadTrainConfig({ flags: { promptDropout: "2" } }), /"promptDropout"/);
  assert.equal(loadTrainConfig({ flags: { sftWeight: "125" } }).sftWeight, 125);
  assert.throws(() => loadTrainConfig({ flags: { sftWeight: "-1" } }), /"sftWeight"/);
  assert.throws(() => loadTrainConfig({ flags: { method: "mapo", sftWeight: "1" } }), /"sftWeight": mixes an SFT term into dpo, hinge or ipo; method "mapo"/);
  const notYaml = join(dir, "x.toml");
  writeFileSync(notYaml, "a = 1");
  assert.throws(() => loadTrainConfig({ file: notYaml }), /unknown extension ".toml"/);
  const broken = join(dir, "broken.json");
  writeFileSync(broken, "{ beta: ");
  assert.throws(() => loadTrainConfig({ file: broken }), /is not valid JSON/);
  assert.throws(() => loadTrainConfig({ file: join(dir, "missing.yaml") }), /cannot read config file/);
  assert.throws(() => parseTrainConfig({ beta: -1 }, "ckpt/config.json"), /ckpt\/config.json: "beta"/);
});

test("a resolved config round-trips through JSON unchanged", () => {
  const c = loadTrainConfig({ flags: { method: "mapo", "mapo.weight": "0.5" } });
  assert.deepEqual(parseTrainConfig(JSON.parse(JSON.stringify(c))), c);
});

test("model and data keys describe the run; layers sit under the file; errors name the caller's flag spelling", () => {
  const d = defaultTrainConfig();
  assert.equal(d.model, "models/emoji-base");
  assert.deepEqual(d.data, { skipBad: false, dropTies: true, crop: "center", flip: true, workers: 1 });
  const yml = join(dir, "data.yaml");
  writeFileSync(yml, "model: m/base\ndata:\n  path: pairs.jsonl\n  resolution: 16\nbeta: 2000\n");
  const c = loadTrainConfig({
    file: yml,
    layers: [{ predictionType: "v_prediction", beta: 100 }, { beta: 200, "data.workers": "0" }],
    flags: { "data.format": "jsonl" },
  });
  assert.equal(c.model, "m/base");
  assert.deepEqual(c.data, { path: "pairs.jsonl", format: "jsonl", resolution: 16, skipBad: false, dropTies: true, crop: "center", flip: true, workers: 0 });
  assert.equal(c.beta, 2000, "the file wins over the layers");
  assert.equal(c.predictionType, "v_prediction", "a layer wins over the defaults");
  assert.equal(loadTrainConfig({ layers: [{ beta: 100 }, { beta: 200 }] }).beta, 200, "later layers win");
  assert.throws(() => loadTrainConfig({ flags: { "lora.rank": "x" }, flagNames: { "lora.rank": "--lora-rank" } }), /flag --lora-rank: "lora.rank"/);
  assert.throws(() => loadTrainConfig({ flags: { "data.format": "csv" } }), /"data.format"/);
  assert.throws(() => loadTrainConfig({ flags: { "data.pth": "x" } }), /unknown key "data.pth"/);
});
