// `label --reward NAME=PATH` and `eval --reward …` from the CLI with the paper's scorers on the
// clip-reward reference's tiny CLIP (and its aesthetic MLP), in process.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliRunner } from "./_capture.js";
import pairsCommand from "../../src/cli/commands/pairs.js";
import labelCommand from "../../src/cli/commands/label.js";
import evalCommand from "../../src/cli/commands/eval.js";
import { PreferenceStore } from "../../src/data/store.js";
import { makeTinyFolders } from "../eval/_fixtures.js";
import { REFERENCE_MODELS_DIR } from "../_reference.js";

const cli = cliRunner({ pairs: pairsCommand, label: labelCommand, eval: evalCommand });
const clipDir = join(REFERENCE_MODELS_DIR, "clip-reward", "clip");
const dir = mkdtempSync(join(tmpdir(), "dpo-cli-scorers-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const aesDir = join(dir, "aesthetic");
mkdirSync(aesDir);
symlinkSync(join(REFERENCE_MODELS_DIR, "clip-reward", "aesthetic", "aesthetic_mlp.safetensors"), join(aesDir, "aesthetic_mlp.safetensors"));
symlinkSync(clipDir, join(aesDir, "clip"));
const folders = makeTinyFolders(dir);
const prompts = join(dir, "prompts.tsv");
writeFileSync(prompts, "Prompt\tCategory\na red ball\tArtifacts\na cat\tAnimals\n");

test("label --reward pickscore=FOLDER and a weighted mix label every stored pair", async () => {
  const db = join(dir, "store.sqlite");
  const p = await cli(["pairs", "--model", folders.base, "--prompts", prompts, "--db", db, "--k", "2", "--steps", "2", "--guidance", "1", "--seed", "1", "--json"]);
  assert.equal(p.code, 0, p.stderr);
  const pairs = (p.json() as { pairs: number }).pairs;
  assert.ok(pairs >= 2);
  const l = await cli(["label", "--db", db, "--reward", `pickscore=${clipDir}`, "--json"]);
  assert.equal(l.code, 0, l.stderr);
  assert.equal(l.json().labelled, pairs);
  assert.equal(l.json().reward, "pickscore");
  const mix = await cli(["label", "--db", db, "--reward", `0.7*pickscore=${clipDir}+0.3*aesthetic=${aesDir}`, "--json"]);
  assert.equal(mix.code, 0, mix.stderr);
  assert.equal(mix.json().reward, "0.7*pickscore+0.3*aesthetic");
  const store = new PreferenceStore(db, { readonly: true });
  try {
    const rows = store.db.prepare("SELECT reward, score_a, score_b FROM ai_labels ORDER BY reward, pair_id").all() as { reward: string; score_a: number; score_b: number }[];
    const byReward = (r: string) => rows.filter((x) => x.reward === r);
    assert.equal(byReward("pickscore").length, pairs);
    assert.equal(byReward("0.7*pickscore+0.3*aesthetic").length, pairs);
    // the tiny model's PickScore is 14.57·cos, so |score| ≤ 14.58
    for (const x of byReward("pickscore")) assert.ok(Math.abs(x.score_a) <= 14.58 && Math.abs(x.score_b) <= 14.58 && x.score_a !== x.score_b);
  } finally {
    store.close();
  }
  const bad = await cli(["label", "--db", db, "--reward", "pickscore"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /pickscore reward needs its weights on disk \(nothing is downloaded\): --reward pickscore=PATH/);
});

test("eval --reward pickscore=…,aesthetic=… reports win rates and mean scores with intervals", async () => {
  const out = join(dir, "eval");
  const r = await cli([
    "eval", "--base", folders.base, "--tuned", folders.full, "--prompts", prompts, "--seeds", "2", "--steps", "2", "--guidance", "1",
    "--reward", `pickscore=${clipDir},aesthetic=${aesDir}`, "--bootstrap", "200", "--out", out, "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const s = r.json() as Record<string, any>;
  assert.deepEqual(Object.keys(s.winRate), ["pickscore", "aesthetic"]);
  assert.equal(s.winRate.pickscore.n, 4);
  const json = JSON.parse(readFileSync(join(out, "eval.json"), "utf8"));
  for (const name of ["pickscore", "aesthetic"]) {
    const m = json.summary.meanScores[name];
    const samples = json.samples as { scores: Record<string, { base: number; tuned: number }> }[];
    const mean = (k: "base" | "tuned") => samples.reduce((a, x) => a + x.scores[name]![k], 0) / samples.length;
    assert.ok(Math.abs(m.base.mean - mean("base")) <= 1e-9 * Math.max(1, Math.abs(mean("base"))), `${name} base mean`);
    assert.ok(Math.abs(m.tuned.mean - mean("tuned")) <= 1e-9 * Math.max(1, Math.abs(mean("tuned"))), `${name} tuned mean`);
    for (const k of ["base", "tuned", "delta"]) assert.ok(m[k].interval[0] <= m[k].mean + 1e-12 && m[k].mean <= m[k].interval[1] + 1e-12, `${name} ${k} interval holds its mean`);
  }
  const html = readFileSync(join(out, "report.html"), "utf8");
  assert.match(html, /Mean score per reward/);
  assert.match(html, /<td>pickscore<\/td>/);
  // the human summary prints the means too
  const text = await cli([
    "eval", "--base", folders.base, "--tuned", folders.full, "--prompts", prompts, "--steps", "2", "--guidance", "1",
    "--reward", `clip=${clipDir}`, "--bootstrap", "50", "--out", join(dir, "eval-text"),
  ]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /mean score \(clip\)  base -?\d[\d.e+-]* \[.*\]  tuned .*  Δ /);
});
