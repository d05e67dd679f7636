// On-policy rounds from the command line: `pairs --model RUN` samples from a training run's tuned
// model (its LoRA on the base it names), not from the base.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
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
