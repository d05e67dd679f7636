import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineCommand } from "citty";
import { runCli } from "../../src/cli/run.js";
import evalCommand from "../../src/cli/commands/eval.js";
import { brightPairsJsonl, makeTinyFolders } from "../eval/_fixtures.js";

const root = defineCommand({ meta: { name: "diffusion-dpo" }, subCommands: { eval: evalCommand } });

/** In-process runCli for usage errors and --help (they go through io, not process.stdout). */
async function cli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(root, argv, { stdout: (t) => { stdout += t; }, stderr: (t) => { stderr += t; } });
  return { code, stdout, stderr };
}

/** The real binary in a child process (the command prints its result on process.stdout). */
async function spawnCli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const main = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", main, ...argv], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), "dpo-cli-eval-"));
const folders = makeTinyFolders(dir);
const promptFile = join(dir, "prompts.tsv");
writeFileSync(promptFile, "Prompt\tCategory\na red ball\tArtifacts\na cat\tAnimals\na dog\tAnimals\n");

test("eval --json on tiny models: LoRA tuned model, appeal reward, implicit accuracy, run curves", async () => {
  const pairs = await brightPairsJsonl(join(dir, "pairs"), 3);
  const out = join(dir, "out");
  const r = await spawnCli([
    "eval", "--base", folders.base, "--tuned", join(dir, "run-lora"), "--prompts", promptFile, "--limit", "2",
    "--seeds", "2", "--steps", "2", "--guidance", "1", "--reward", "appeal", "--pairs", pairs, "--pairs-limit", "2", "--draws", "2", "--tie-margin", "0.001",
    "--run", folders.unetRun, "--bootstrap", "100", "--out", out, "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout.trim()) as Record<string, any>;
  assert.equal(summary.config.tunedKind, "lora");
  assert.equal(summary.config.tieMargin, 0.001, "kebab-case --tie-margin reaches the config");
  assert.deepEqual(summary.config.lora, { rank: 2, alpha: 4, targets: ["to_q", "to_k", "to_v", "to_out.0"] });
  assert.equal(summary.winRate.appeal.n, 4, "2 prompts × 2 seeds");
  assert.deepEqual(Object.keys(summary.winRate.appeal.byCategory), ["Artifacts", "Animals"], "--limit takes prompts across categories");
  assert.equal(summary.implicitAccuracy.pairs, 2);
  assert.equal(summary.diversity.perPrompt.length, 2);
  assert.equal(summary.bestOfN, null);
  assert.equal(summary.report, join(out, "report.html"));
  for (const f of ["eval.json", "report.html", "images/base/0.png", "images/tuned/3.png"]) assert.ok(existsSync(join(out, f)), f);
  const html = readFileSync(join(out, "report.html"), "utf8");
  assert.equal((html.match(/<svg class="curve"/g) ?? []).length, 4, "the run's four training curves");
  assert.match(r.stderr, /base samples/, "progress on stderr");
});

test("eval: usage errors name the flag", async () => {
  const noTuned = await cli(["eval", "--base", folders.base, "--prompts", promptFile]);
  assert.equal(noTuned.code, 1);
  assert.match(noTuned.stderr, /--tuned is required/);
  const badSampler = await cli(["eval", "--base", folders.base, "--tuned", folders.full, "--prompts", promptFile, "--sampler", "nope"]);
  assert.match(badSampler.stderr, /--sampler nope: use one of/);
  const badReward = await cli(["eval", "--base", folders.base, "--tuned", folders.full, "--prompts", promptFile, "--reward", "no-such-reward"]);
  assert.match(badReward.stderr, /--reward no-such-reward: unknown reward/);
  const badSeeds = await cli(["eval", "--base", folders.base, "--tuned", folders.full, "--prompts", promptFile, "--seeds", "0"]);
  assert.match(badSeeds.stderr, /--seeds must be an integer ≥ 1/);
  const help = await cli(["eval", "--help"]);
  assert.equal(help.code, 0);
  for (const flag of ["--tuned", "--pairs", "--bestOfN", "--tieMargin", "--run", "--embedImages"]) assert.ok(help.stdout.includes(flag), `help lists ${flag}: ${help.stdout}`);
});
