// DDPO_THREADS sets libtorch's thread count for any command; a bad value is a clear error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

const main = new URL("../../src/cli/main.ts", import.meta.url).pathname;
const run = (env: Record<string, string>) =>
  spawnSync(process.execPath, ["--import", "tsx", main, "info", "--json"], { env: { ...process.env, ...env }, encoding: "utf8" });

test("DDPO_THREADS=1 runs the command with one libtorch thread", () => {
  const r = run({ DDPO_THREADS: "1" });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).threads, 1);
});

test("DDPO_THREADS that is not a positive integer stops with a message naming it", () => {
  const r = run({ DDPO_THREADS: "two" });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /DDPO_THREADS must be a positive integer, got "two"/);
});
