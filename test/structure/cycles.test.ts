// scripts/check-cycles.mjs (npm run check:cycles): src/ has no import cycle among files nor among
// its top-level folders; and the check itself finds both kinds on a graph built to hold them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function check(...args: string[]) {
  const r = spawnSync(process.execPath, ["scripts/check-cycles.mjs", "--json", ...args], { encoding: "utf8" });
  assert.notEqual(r.status, null, `check-cycles did not exit: ${r.stderr}`);
  return { status: r.status, result: JSON.parse(r.stdout) as { fileCount: number; files: string[][]; folders: { members: string[]; cycle: string[]; edges: Record<string, string[]> }[] } };
}

test("src/ has no file cycles and no folder cycles", () => {
  const { status, result } = check();
  assert.ok(result.fileCount > 150, `madge read only ${result.fileCount} files under src/`);
  assert.deepEqual(result.files, [], `file cycles: ${JSON.stringify(result.files)}`);
  assert.deepEqual(result.folders.map((f) => f.cycle), [], `folder cycles: ${JSON.stringify(result.folders, null, 1)}`);
  assert.equal(status, 0);
});

test("the check reports a file cycle and a folder cycle made of acyclic files", () => {
  const graph = {
    "a/x.ts": ["a/y.ts"],
    "a/y.ts": ["a/x.ts", "b/p.ts"], // x ↔ y: a file cycle (also inside folder a)
    "b/p.ts": ["util/u.ts"],
    "b/q.ts": ["a/z.ts"], // b → a through other files: a ↔ b is a folder cycle only
    "a/z.ts": [],
    "util/u.ts": [],
    "index.ts": ["a/x.ts", "b/q.ts"],
  };
  const path = join(mkdtempSync(join(tmpdir(), "cycles-")), "graph.json");
  writeFileSync(path, JSON.stringify(graph));
  const { status, result } = check("--graph", path);
  assert.equal(status, 1);
  assert.deepEqual(result.files, [["a/x.ts", "a/y.ts", "a/x.ts"]]);
  assert.equal(result.folders.length, 1);
  assert.deepEqual(result.folders[0]!.members, ["a", "b"]);
  assert.deepEqual(result.folders[0]!.edges, { "a -> b": ["a/y.ts -> b/p.ts"], "b -> a": ["b/q.ts -> a/z.ts"] });
});
