// On-policy rounds from the command line: `pairs --model RUN` samples from a training run's tuned
// model (its LoRA on the base it names), not from the base.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliRunner } from "./_capture.js";
import { brightJsonl, tinyModelFolder } from "./train-fixture.js";
import pairsCommand from "../../src/cli/commands/pairs.js";
import trainCommand from "../../src/cli/commands/train.js";
import { PreferenceStore } from "../../src/data/store.js";

const cli = cliRunner({ pairs: pairsCommand, train: trainCommand });

test("pairs --model RUN samples candidates from the run's tuned model", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ddpo-round-"));
  const modelDir = tinyModelFolder(join(dir, "base"));
  const data = await brightJsonl(join(dir, "data"));
  const run = join(dir, "run");
  // a large lr so the adapters clearly move in 3 steps
  const t = await cli(["train", "--model", modelDir, "--data", data, "--out", run, "--lora", "--batch", "2", "--steps", "3", "--lr", "0.05", "--beta", "1000", "--workers", "0", "--json"]);
  assert.equal(t.code, 0, t.stderr);
  const prompts = join(dir, "prompts.txt");
  writeFileSync(prompts, "pair 0\npair 1\n");
  const sample = async (model: string, db: string) => {
    const r = await cli(["pairs", "--model", model, "--prompts", prompts, "--db", db, "--k", "2", "--steps", "4", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const store = new PreferenceStore(db);
    const images = store.pairIds().flatMap((id) => { const p = store.pair(id)!; return [store.imageBytes(p.imageA), store.imageBytes(p.imageB)]; });
    const models = store.pairIds().map((id) => store.image(store.pair(id)!.imageA)!.model);
    store.close();
    return { images, models };
  };
  const fromBase = await sample(modelDir, join(dir, "base.sqlite"));
  const fromRun = await sample(run, join(dir, "run.sqlite"));
  assert.equal(fromRun.images.length, 4, "2 prompts × 1 pair × 2 images");
  assert.ok(fromRun.models.every((m) => m !== null && m.endsWith("run")), `candidates are recorded as the run's: ${fromRun.models.join(", ")}`);
  // same prompts, same seeds: the tuned model's images differ from the base's
  assert.ok(fromRun.images.some((im, i) => Buffer.compare(Buffer.from(im), Buffer.from(fromBase.images[i]!)) !== 0), "the run's samples are not the base's");
  const bad = await cli(["pairs", "--model", join(dir, "data"), "--prompts", prompts, "--db", join(dir, "x.sqlite")]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /neither a model folder .* nor a training run/);
});

test("train --init-from RUN starts the next round from the run's adapters (fresh optimizer), and refuses a mismatch", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ddpo-round2-"));
  const modelDir = tinyModelFolder(join(dir, "base"));
  const data = await brightJsonl(join(dir, "data"));
  const common = ["--model", modelDir, "--data", data, "--batch", "2", "--beta", "1000", "--workers", "0", "--lr", "0.05", "--json"];
  const r1 = join(dir, "round1");
  assert.equal((await cli(["train", ...common, "--out", r1, "--lora", "--steps", "3"])).code, 0);
  const r2 = join(dir, "round2");
  const t2 = await cli(["train", ...common, "--out", r2, "--lora", "--steps", "1", "--init-from", r1]);
  assert.equal(t2.code, 0, t2.stderr);
  const lossesOf = (run: string) => readFileSync(join(run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; loss: number; implicitAcc: number }).filter((l) => l.type === "step");
  const first = lossesOf(r2)[0]!;
  // from the base, step 1 sits exactly at ln 2 (policy = reference); from round 1's adapters it does not
  assert.ok(Math.abs(lossesOf(r1)[0]!.loss - Math.LN2) < 1e-6);
  assert.ok(Math.abs(first.loss - Math.LN2) > 1e-4, `round 2 starts from round 1's adapters: loss ${first.loss}`);
  // the saved config records where it started (a resume reproduces it)
  const cfg = JSON.parse(readFileSync(join(r2, "final", "training_config.json"), "utf8")) as { initFrom?: string };
  assert.equal(cfg.initFrom, r1);
  const bad = await cli(["train", ...common, "--out", join(dir, "bad"), "--full", "--steps", "1", "--init-from", r1]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--init-from .*holds LoRA adapters, but this run is full fine-tuning/);
  const rank = await cli(["train", ...common, "--out", join(dir, "rank"), "--lora", "--lora-rank", "2", "--steps", "1", "--init-from", r1]);
  assert.notEqual(rank.code, 0);
  assert.match(rank.stderr, /--init-from .*has shape \[8, 64\] but the adapter expects \[2, 64\] \(different rank\?\)/);
});
