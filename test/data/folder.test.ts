import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FolderSource, folderPairDirs } from "../../src/data/folder.js";
import { PreferenceDataset } from "../../src/data/dataset.js";
import { DataError } from "../../src/data/errors.js";
import { jpeg, png, tempDir } from "./_fixtures.js";

async function makeFolder(captionStyle: "txt" | "json"): Promise<string> {
  const root = tempDir("dpo-folder-");
  mkdirSync(join(root, "w"));
  mkdirSync(join(root, "l"));
  writeFileSync(join(root, "w", "001.png"), await png(10, 8, [200, 0, 0]));
  writeFileSync(join(root, "l", "001.png"), await png(10, 8, [0, 0, 200]));
  writeFileSync(join(root, "w", "002.jpg"), await jpeg(10, 8, [0, 200, 0]));
  writeFileSync(join(root, "l", "002.png"), await png(10, 8, [0, 90, 0])); // same stem, other extension
  writeFileSync(join(root, "w", "003.png"), new TextEncoder().encode("garbage, not a png")); // corrupt
  writeFileSync(join(root, "l", "003.png"), await png(10, 8, [1, 2, 3]));
  writeFileSync(join(root, "w", "004.png"), await png(10, 8, [5, 5, 5])); // no rejected image
  writeFileSync(join(root, "l", "005.png"), await png(10, 8, [5, 5, 5])); // no chosen image
  if (captionStyle === "txt") {
    writeFileSync(join(root, "w", "001.txt"), "a red square\n");
    writeFileSync(join(root, "l", "002.txt"), "a green square"); // beside the rejected image
    writeFileSync(join(root, "w", "003.txt"), "corrupt one");
    writeFileSync(join(root, "w", "004.txt"), "lonely");
  } else {
    writeFileSync(join(root, "captions.json"), JSON.stringify({ "001.png": "a red square", "002": "a green square", "003.png": "corrupt one", "004.png": "lonely" }));
  }
  return root;
}

test("w/ and l/ pair by file name (or stem), captions from .txt files", async () => {
  const root = await makeFolder("txt");
  assert.deepEqual(folderPairDirs(root), { chosen: "w", rejected: "l" });
  const ds = new PreferenceDataset(new FolderSource(root), true);
  const pairs = await ds.toArray();
  assert.deepEqual(pairs.map((p) => [p.id, p.prompt]), [["001", "a red square"], ["002", "a green square"], ["003", "corrupt one"]]);
  assert.equal(pairs[1]!.chosen, join(root, "w", "002.jpg"));
  assert.equal(pairs[1]!.rejected, join(root, "l", "002.png"));
  assert.deepEqual(ds.stats.skipped, { "missing-file": 2 });
  assert.match(ds.stats.skippedExamples[0]!, /row 3, field 'l\/004\.\*': no rejected image matches 'w\/004\.png'/);
  assert.match(ds.stats.skippedExamples[1]!, /no chosen image matches 'l\/005\.png'/);
});

test("captions.json; checkImages catches the corrupt file; default throws", async () => {
  const root = await makeFolder("json");
  const ds = new PreferenceDataset(new FolderSource(root, { checkImages: true }), true);
  const pairs = await ds.toArray();
  assert.deepEqual(pairs.map((p) => p.prompt), ["a red square", "a green square"]);
  assert.deepEqual(ds.stats.skipped, { "corrupt-image": 1, "missing-file": 2 });
  await assert.rejects(new PreferenceDataset(new FolderSource(root, { checkImages: true })).toArray(), (e: unknown) =>
    e instanceof DataError && e.row === 2 && e.field === "w/003.png" && e.reason === "corrupt-image");
});

test("missing captions are named; a folder without w/ l/ is refused", async () => {
  const root = tempDir("dpo-folder-");
  mkdirSync(join(root, "chosen"));
  mkdirSync(join(root, "rejected"));
  writeFileSync(join(root, "chosen", "a.png"), await png(4, 4, [1, 1, 1]));
  writeFileSync(join(root, "rejected", "a.png"), await png(4, 4, [2, 2, 2]));
  await assert.rejects(new PreferenceDataset(new FolderSource(root)).toArray(), /row 0, field 'chosen\/a\.png': no caption for 'a\.png'/);
  writeFileSync(join(root, "a.txt"), "root-level caption");
  const pairs = await new PreferenceDataset(new FolderSource(root)).toArray();
  assert.equal(pairs[0]!.prompt, "root-level caption");
  assert.throws(() => new FolderSource(tempDir()), /expected sub-directories w\/ and l\//);
});
