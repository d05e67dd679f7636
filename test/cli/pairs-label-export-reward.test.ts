// The AI-feedback commands end to end, in process: pairs → label → export, and reward train/score.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { cliRunner } from "./_capture.js";
import pairsCommand from "../../src/cli/commands/pairs.js";
import labelCommand from "../../src/cli/commands/label.js";
import exportCommand from "../../src/cli/commands/export.js";
import rewardCommand from "../../src/cli/commands/reward.js";
import { openPreferenceData } from "../../src/data/open.js";
import { PreferenceStore } from "../../src/data/store.js";
import { createTextToImageModel, disposeTextToImageModel, saveModelFolder } from "../../src/models/pipeline.js";
import { TINY_UNET_CONFIG } from "../../src/models/unet/config.js";
import { setInitSeed } from "../../src/nn/index.js";


const cli = cliRunner({ pairs: pairsCommand, label: labelCommand, export: exportCommand, reward: rewardCommand });

const dir = mkdtempSync(join(tmpdir(), "dpo-cli-feedback-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test("pairs → label → export on a tiny model, resumable, and training reads the labels", async () => {
  setInitSeed(0);
  const m = createTextToImageModel({ unet: { ...TINY_UNET_CONFIG, sampleSize: 8 } });
  const modelDir = join(dir, "model");
  saveModelFolder(modelDir, m);
  disposeTextToImageModel(m);
  const prompts = join(dir, "prompts.tsv");
  writeFileSync(prompts, "Prompt\tCategory\na red ball\tArtifacts\na cat\tAnimals\n");
  const db = join(dir, "store.sqlite");
  const args = ["pairs", "--model", modelDir, "--prompts", prompts, "--db", db, "--k", "3", "--steps", "2", "--guidance", "1", "--seed", "3", "--json"];
  const r1 = await cli(args);
  assert.equal(r1.code, 0, r1.stderr);
  const s1 = r1.json() as Record<string, number>;
  assert.deepEqual([s1["imagesGenerated"], s1["pairsAdded"], s1["pairs"]], [6, 6, 6]);
  assert.match(r1.stderr, /2 prompts, 0 already done, 6 images to sample/);
  const r2 = await cli(args);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(r2.json().imagesGenerated, 0, "re-running skips prompts already done");

  const l = await cli(["label", "--db", db, "--reward", "appeal", "--margin", "0", "--json"]);
  assert.equal(l.code, 0, l.stderr);
  const ls = l.json() as Record<string, number>;
  assert.equal(ls["labelled"], 6);
  assert.equal(ls["a"]! + ls["b"]! + ls["ties"]!, 6);
  const store = new PreferenceStore(db, { readonly: true });
  assert.equal(store.counts().aiLabels, 6);
  store.close();
  const data = openPreferenceData(db);
  assert.equal((await data.toArray()).length, 6 - ls["ties"]!);
  await data.close();

  const out = join(dir, "export", "pairs.parquet");
  const e = await cli(["export", "--db", db, "--out", out, "--json"]);
  assert.equal(e.code, 0, e.stderr);
  assert.equal(e.json().rows, 6 - ls["ties"]!);
  const back = openPreferenceData(out);
  assert.equal((await back.toArray()).length, 6 - ls["ties"]!);
  await back.close();
  const j = await cli(["export", "--db", db, "--out", join(dir, "export", "pairs.jsonl")]);
  assert.equal(j.code, 0, j.stderr);
  assert.match(j.stdout, /wrote \d pairs to/);
  // a second reward's labels: export must be told which reward decides
  const s2 = new PreferenceStore(db);
  s2.setAiLabel(s2.pairIds()[0]!, "other", 1, 0);
  s2.close();
  const amb = await cli(["export", "--db", db, "--out", join(dir, "export", "again.parquet")]);
  assert.equal(amb.code, 1);
  assert.match(amb.stderr, /AI labels from several rewards \(appeal, other\); choose one with --reward NAME/);
  const chosen = await cli(["export", "--db", db, "--out", join(dir, "export", "again.parquet"), "--reward", "appeal", "--json"]);
  assert.equal(chosen.code, 0, chosen.stderr);
  assert.equal(chosen.json().rows, 6 - ls["ties"]!);
});

test("usage errors name the flag", async () => {
  const cases: [string[], RegExp][] = [
    [["pairs", "--prompts", join(dir, "missing.txt")], /--prompts .*no such file/],
    [["pairs", "--prompts", "x", "--k", "1"], /--k must be an integer ≥ 2/],
    [["pairs", "--prompts", "x", "--sampler", "nope"], /--sampler nope is unknown/],
    [["label", "--db", join(dir, "none.sqlite")], /--db .*no such preference store/],
    [["label", "--db", "x", "--margin", "-1"], /--margin must be a number ≥ 0/],
    [["label", "--db", join(dir, "store.sqlite"), "--reward", "nonsense"], /unknown reward "nonsense"/],
    [["export", "--db", join(dir, "store.sqlite"), "--out", join(dir, "x.csv")], /name a .jsonl or .parquet file/],
    [["reward", "train", "--data", "pickapic"], /only "emoji"/],
    [["reward", "train", "--steps", "0"], /--steps must be a positive integer/],
  ];
  for (const [argv, re] of cases) {
    const r = await cli(argv);
    assert.equal(r.code, 1, argv.join(" "));
    assert.match(r.stderr, re, argv.join(" "));
  }
  const help = await cli(["label", "--help"]);
  assert.match(help.stdout, /--margin/);
  assert.match(help.stdout, /--reward/);
});

test("reward score prints one score per image file", async () => {
  const files: string[] = [];
  for (const [name, v] of [["white.png", 255], ["red.png", 0]] as const) {
    const px = new Uint8Array(8 * 8 * 3).fill(255);
    if (v === 0) for (let i = 27; i < 37; i++) px.set([255, 0, 0], i * 3);
    const f = join(dir, name);
    await sharp(px, { raw: { width: 8, height: 8, channels: 3 } }).png().toFile(f);
    files.push(f);
  }
  const r = await cli(["reward", "score", "--reward", "appeal", "--prompt", "anything", "--json", ...files]);
  assert.equal(r.code, 0, r.stderr);
  const out = r.json() as { reward: string; scores: { file: string; score: number }[] };
  assert.equal(out.reward, "appeal");
  assert.ok(Math.abs(out.scores[0]!.score) < 1e-9, "a blank white image has appeal 0");
  assert.ok(out.scores[1]!.score > 0.1);
  assert.ok(existsSync(files[0]!) && readFileSync(files[1]!).length > 0);
});
