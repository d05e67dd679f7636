import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { detectFormat, openPreferenceData, PreferenceStore } from "../../src/data/index.js";
import { jpeg, png, tempDir, writePickapic } from "./_fixtures.js";

test("format detection and one PreferencePair stream from every format", async () => {
  const root = tempDir("dpo-open-");
  const a = await png(8, 8, [200, 10, 10]);
  const b = await png(8, 8, [10, 10, 200]);
  // parquet
  writePickapic(join(root, "train-0.parquet"), [
    { caption: "cat", jpg_0: await jpeg(8, 8, [1, 2, 3]), jpg_1: await jpeg(8, 8, [3, 2, 1]), label_0: 0, label_1: 1 },
    { caption: "tie", jpg_0: await jpeg(8, 8, [1, 2, 3]), jpg_1: await jpeg(8, 8, [3, 2, 1]), label_0: 0.5, label_1: 0.5 },
  ]);
  // folder
  const folder = join(root, "pairs");
  mkdirSync(join(folder, "w"), { recursive: true });
  mkdirSync(join(folder, "l"));
  writeFileSync(join(folder, "w", "x.png"), a);
  writeFileSync(join(folder, "l", "x.png"), b);
  writeFileSync(join(folder, "w", "x.txt"), "cat");
  // jsonl
  writeFileSync(join(folder, "a.png"), a);
  writeFileSync(join(folder, "b.png"), b);
  writeFileSync(join(root, "p.jsonl"), JSON.stringify({ prompt: "cat", chosen: "pairs/a.png", rejected: "pairs/b.png" }) + "\n");
  // sqlite
  const store = new PreferenceStore(join(root, "s.db"));
  const pid = store.addPair(store.addImage({ prompt: "cat", data: a }), store.addImage({ prompt: "cat", data: b }));
  store.vote(pid, "ann", "a");
  store.close();

  const cases: [string, string][] = [
    [join(root, "train-0.parquet"), "pickapic"],
    [join(root, "train-*.parquet"), "pickapic"],
    [folder, "folder"],
    [join(root, "p.jsonl"), "jsonl"],
    [join(root, "s.db"), "sqlite"],
  ];
  for (const [spec, fmt] of cases) {
    assert.equal(detectFormat(spec), fmt, spec);
    const data = openPreferenceData(spec, { checkImages: true });
    assert.equal(data.format, fmt);
    const pairs = await data.toArray();
    assert.equal(pairs.length, 1, spec);
    assert.equal(pairs[0]!.prompt, "cat");
    assert.equal(pairs[0]!.tie, false);
    // every format yields a loader too
    const loader = data.loader({ batchSize: 1, augment: { resolution: 4 }, workers: 0 });
    for await (const batch of loader.batches(1)) assert.deepEqual(batch.shape, [2, 3, 4, 4]);
    await data.close();
  }
  assert.throws(() => detectFormat(join(root, "nothing.bin")), /no such file/);
  writeFileSync(join(root, "x.csv"), "");
  assert.throws(() => detectFormat(join(root, "x.csv")), /cannot tell the data format/);
  const empty = tempDir();
  assert.throws(() => detectFormat(empty), /neither parquet shards nor w\/ and l\//);
});
