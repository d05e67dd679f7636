import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { JsonlSource } from "../../src/data/jsonl.js";
import { PreferenceDataset } from "../../src/data/dataset.js";
import { DataError } from "../../src/data/errors.js";
import { png, tempDir } from "./_fixtures.js";

async function makeJsonl(): Promise<string> {
  const root = tempDir("dpo-jsonl-");
  mkdirSync(join(root, "img"));
  for (const n of ["a", "b", "c", "d"]) writeFileSync(join(root, "img", `${n}.png`), await png(6, 6, [n.charCodeAt(0), 0, 0]));
  writeFileSync(join(root, "img", "bad.png"), "nope");
  const abs = join(root, "img", "d.png");
  const lines = [
    { prompt: "chosen form", chosen: "img/a.png", rejected: "img/b.png", id: "p1" }, // 0
    { caption: "label form, winner second", image_0: "img/a.png", image_1: pathToFileURL(abs).href, label_0: 0, label_1: 1 }, // 1
    { caption: "tie", image_0: "img/a.png", image_1: "img/b.png", label_0: 0.5, label_1: 0.5 }, // 2
    { prompt: "bad label", image_0: "img/a.png", image_1: "img/b.png", label_0: 2, label_1: -1 }, // 3
    { prompt: "", chosen: "img/a.png", rejected: "img/b.png" }, // 4 empty
    { prompt: "missing file", chosen: "img/zzz.png", rejected: "img/b.png" }, // 5
    { prompt: "corrupt", chosen: "img/c.png", rejected: "img/bad.png" }, // 6
    { prompt: "remote", chosen: "https://example.com/x.png", rejected: "img/b.png" }, // 7
  ].map((o) => JSON.stringify(o));
  lines.splice(8, 0, "", "{not json"); // 8 blank, 9 invalid
  lines.push(JSON.stringify({ prompt: "jpg names", jpg_0: "img/c.png", jpg_1: "img/d.png", label_0: 1, label_1: 0 })); // 10
  const file = join(root, "pairs.jsonl");
  writeFileSync(file, lines.join("\n") + "\n");
  return file;
}

test("both label forms, ties dropped, winner first, relative paths and file:// URLs", async () => {
  const file = await makeJsonl();
  const root = join(file, "..");
  const ds = new PreferenceDataset(new JsonlSource(file, { checkImages: true }), true);
  const pairs = await ds.toArray();
  assert.deepEqual(pairs.map((p) => p.source.row), [0, 1, 10]);
  assert.equal(pairs[0]!.id, "p1");
  assert.equal(pairs[0]!.chosen, join(root, "img", "a.png"));
  assert.equal(pairs[1]!.chosen, join(root, "img", "d.png")); // label (0, 1) → image_1 first
  assert.equal(pairs[1]!.rejected, join(root, "img", "a.png"));
  assert.equal(pairs[1]!.id, `${file}:2`);
  assert.equal(pairs[2]!.chosen, join(root, "img", "c.png"));
  const s = ds.stats;
  assert.equal(s.tiesDropped, 1);
  assert.equal(s.swapped, 1);
  assert.equal(s.rowsRead, 10); // the blank line is not a row
  assert.deepEqual(s.skipped, { "bad-label": 1, "empty-caption": 1, "missing-file": 1, "corrupt-image": 1, "wrong-type": 2 });
  assert.ok(s.skippedExamples.some((m) => /row 7, field 'chosen': .*remote URL/.test(m)));
  assert.ok(s.skippedExamples.some((m) => /row 9: line 10 is not a JSON object/.test(m)));
});

test("without skipBad the first bad line throws, naming it", async () => {
  const file = await makeJsonl();
  await assert.rejects(new PreferenceDataset(new JsonlSource(file)).toArray(), (e: unknown) =>
    e instanceof DataError && e.row === 3 && e.field === "label_0" && /label 2 is not one of 0, 0.5, 1/.test(e.message));
  const kept = new PreferenceDataset(new JsonlSource(file, { dropTies: false }), true);
  const pairs = await kept.toArray();
  assert.ok(pairs.some((p) => p.tie && p.prompt === "tie"));
});
