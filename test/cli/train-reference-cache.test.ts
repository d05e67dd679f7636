// `diffusion-dpo train --reference-cache K` through the CLI: the real pipeline (tiny UNet folder,
// JSONL pairs streamed by the loader), LoRA and full fine-tuning, resume, and the refusals.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineCommand } from "citty";
import { runCli } from "../../src/cli/run.js";
import { commands } from "../../src/cli/commands/index.js";
import { train } from "../../src/cli/commands/train.js";
import { REFERENCE_CACHE_FILE } from "../../src/train/reference-cache.js";
import { brightJsonl, tinyModelFolder } from "./train-fixture.js";

const root = defineCommand({ meta: { name: "diffusion-dpo" }, subCommands: commands });
const dir = mkdtempSync(join(tmpdir(), "dpo-cli-refcache-"));
const modelDir = tinyModelFolder(join(dir, "model"));
let pairs = "";

async function quiet<T>(fn: () => Promise<T>): Promise<{ value: T; stderr: string }> {
  let stderr = "";
  const err = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string | Uint8Array) => { stderr += String(s); return true; }) as typeof process.stderr.write;
  try {
    return { value: await fn(), stderr };
  } finally {
    process.stderr.write = err;
  }
}

const args = (out: string, extra: Record<string, string | boolean> = {}) => ({
  model: modelDir, data: pairs, out, batch: "2", lr: "1e-3", scaleLr: false, warmup: "0", beta: "1000", workers: "0",
  steps: "6", checkpointEvery: "2", referenceCache: "3", flip: false, promptDropout: "0.3", ...extra,
});
const lossesOf = (out: string): number[] =>
  readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; loss: number })
    .filter((l) => l.type === "step").map((l) => l.loss);

test("setup: JSONL pairs", async () => {
  pairs = await brightJsonl(join(dir, "data"), 5); // 5 pairs, batch 2: the reference pass's last batch holds 1
});

test("--reference-cache without --no-flip is refused, naming the flags", async () => {
  let stderr = "";
  const code = await runCli(root, ["train", "--model", modelDir, "--data", pairs, "--out", join(dir, "flip"), "--reference-cache", "2", "--lora"], {
    stdout: () => {}, stderr: (s) => { stderr += s; },
  });
  assert.equal(code, 1, stderr);
  assert.match(stderr, /--reference-cache: data\.flip is on; .*pass --no-flip \(config: data\.flip false\)/);
  assert.equal(existsSync(join(dir, "flip", REFERENCE_CACHE_FILE)), false);
});

test("LoRA: the cache is built from the data in file order, reused on resume, and the resumed losses equal the uninterrupted run's", async () => {
  const a = join(dir, "lora-a");
  const full = await quiet(() => train({ ...args(a), lora: true }));
  assert.equal(full.value?.referenceCache?.action, "built");
  assert.equal(full.value?.referenceCache?.pairs, 5);
  assert.match(full.stderr, /reference cache built \(.*reference-cache\.safetensors\): 5 pairs × 3 draws/);

  const b = join(dir, "lora-b");
  await quiet(() => train({ ...args(b, { steps: "3" }), lora: true }));
  const resumed = await quiet(() => train({ ...args(b), lora: true, resume: true }));
  assert.equal(resumed.value?.referenceCache?.action, "reused");
  assert.deepEqual(readFileSync(join(b, REFERENCE_CACHE_FILE)), readFileSync(join(a, REFERENCE_CACHE_FILE)));
  const la = lossesOf(a);
  assert.equal(la.length, 6);
  assert.deepEqual(lossesOf(b), la);
});

test("full fine-tuning frees the reference copy; a resumed run with another K is refused naming the file", async () => {
  const out = join(dir, "full");
  const r = await quiet(() => train({ ...args(out, { steps: "2" }), full: true }));
  const freed = r.value?.referenceCache?.referenceFreedBytes ?? 0;
  assert.ok(freed > 0, "the frozen copy's bytes were released");
  assert.match(r.stderr, /reference copy freed \(\d+\.\d MiB\)/);
  await assert.rejects(
    quiet(() => train({ ...args(out, { steps: "4", referenceCache: "2" }), full: true, resume: true })),
    /reference cache .*reference-cache\.safetensors was built for other settings \(draws: 3 in the cache, 2 in this run\), but this run resumes from/,
  );
});
