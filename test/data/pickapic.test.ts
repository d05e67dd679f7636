import { test, before } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { copyFileSync, statSync } from "node:fs";
import { asyncBufferFromFile } from "hyparquet";
import { PickapicSource } from "../../src/data/pickapic.js";
import { PreferenceDataset } from "../../src/data/dataset.js";
import { DataError } from "../../src/data/errors.js";
import { skippedTotal } from "../../src/data/types.js";
import sharp from "sharp";
import { jpeg, tempDir, writePickapic, type PickRow } from "./_fixtures.js";

async function noiseJpeg(size: number, seed: number): Promise<Uint8Array> {
  const d = new Uint8Array(size * size * 3);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < d.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    d[i] = x >>> 24;
  }
  return new Uint8Array(await sharp(d, { raw: { width: size, height: size, channels: 3 } }).jpeg({ quality: 90 }).toBuffer());
}

let dir = "";
let shard = "";
let rows: PickRow[] = [];

before(async () => {
  dir = tempDir();
  const img = (i: number) => jpeg(16, 12, [i * 20, 40, 200 - i * 20]);
  const good = await img(9);
  const truncated = good.subarray(0, Math.floor(good.length / 2));
  rows = [
    { caption: "a red cat", jpg_0: await img(0), jpg_1: await img(1), label_0: 1, label_1: 0 }, // 0 keep order
    { caption: "a blue dog", jpg_0: await img(2), jpg_1: await img(3), label_0: 0, label_1: 1 }, // 1 swap
    { caption: "a tie", jpg_0: await img(4), jpg_1: await img(5), label_0: 0.5, label_1: 0.5 }, // 2 tie
    { caption: "corrupt", jpg_0: await img(6), jpg_1: truncated, label_0: 1, label_1: 0 }, // 3 corrupt jpg_1
    { caption: "bad label", jpg_0: await img(7), jpg_1: await img(8), label_0: 0.7, label_1: 0.3 }, // 4 bad label
    { caption: "  ", jpg_0: await img(7), jpg_1: await img(8), label_0: 1, label_1: 0 }, // 5 empty caption
    { caption: "dreamlike", jpg_0: await img(1), jpg_1: await img(2), label_0: 0, label_1: 1, model_0: "dreamlike", model_1: "dreamlike" }, // 6
    { caption: "unlabelled", jpg_0: await img(3), jpg_1: await img(4), label_0: 1, label_1: 0, has_label: false }, // 7
  ];
  shard = join(dir, "train-00000.parquet");
  writePickapic(shard, rows, { rowGroupSize: 3 });
});

test("streams row group by row group: units are the row groups", async () => {
  const src = new PickapicSource(shard);
  const units = await src.units();
  assert.deepEqual(units.map((u) => u.rows), [3, 3, 2]);
  assert.equal(await src.rowCount(), 8);
  const g1 = await src.readUnit(1);
  assert.equal(g1.length, 3);
  assert.equal(g1[2]!.kind, "error"); // row 5: empty caption
});

test("bad input stops reading by default with a DataError naming file, row and field", async () => {
  const ds = new PreferenceDataset(new PickapicSource(shard));
  await assert.rejects(ds.toArray(), (e: unknown) => {
    assert.ok(e instanceof DataError);
    assert.equal(e.reason, "bad-label");
    assert.equal(e.row, 4);
    assert.equal(e.field, "label_0");
    assert.ok(e.message.includes("train-00000.parquet, row 4, field 'label_0'"), e.message);
    return true;
  });
  // with images checked, the truncated JPEG in row 3 is found first
  const checked = new PreferenceDataset(new PickapicSource(shard, { checkImages: true }));
  await assert.rejects(checked.toArray(), (e: unknown) => e instanceof DataError && e.row === 3 && e.field === "jpg_1" && e.reason === "corrupt-image");
});

test("skipBad: ties dropped, winner first, bad rows counted by reason", async () => {
  const ds = new PreferenceDataset(new PickapicSource(shard, { checkImages: true }), true);
  const pairs = await ds.toArray();
  assert.deepEqual(pairs.map((p) => p.source.row), [0, 1, 6, 7]);
  assert.deepEqual(pairs.map((p) => p.prompt), ["a red cat", "a blue dog", "dreamlike", "unlabelled"]);
  // row 0: label (1,0) keeps jpg_0 first; row 1: label (0,1) → jpg_1 is chosen
  assert.deepEqual(pairs[0]!.chosen, rows[0]!.jpg_0);
  assert.deepEqual(pairs[0]!.rejected, rows[0]!.jpg_1);
  assert.deepEqual(pairs[1]!.chosen, rows[1]!.jpg_1);
  assert.deepEqual(pairs[1]!.rejected, rows[1]!.jpg_0);
  assert.deepEqual(pairs[1]!.fields, { chosen: "jpg_1", rejected: "jpg_0" });
  assert.equal(pairs[0]!.id, "1000");
  assert.equal(pairs[1]!.meta?.best_image_uid, "u1-1");
  assert.ok(pairs.every((p) => !p.tie));
  const s = ds.stats;
  assert.equal(s.rowsRead, 8);
  assert.equal(s.pairs, 4);
  assert.equal(s.tiesDropped, 1);
  assert.equal(s.swapped, 2);
  assert.deepEqual(s.skipped, { "corrupt-image": 1, "bad-label": 1, "empty-caption": 1 });
  assert.equal(skippedTotal(s), 3);
  assert.equal(s.skippedExamples.length, 3);
  assert.match(s.skippedExamples[0]!, /row 3, field 'jpg_1'/);
});

test("dropTies false keeps the tie, marked", async () => {
  const ds = new PreferenceDataset(new PickapicSource(shard, { dropTies: false }), true);
  const pairs = await ds.toArray();
  const tie = pairs.find((p) => p.source.row === 2);
  assert.ok(tie);
  assert.equal(tie.tie, true);
  assert.equal(ds.stats.tiesDropped, 0);
  // without checkImages the corrupt row passes the reader (the loader's decode catches it)
  assert.deepEqual(pairs.map((p) => p.source.row), [0, 1, 2, 3, 6, 7]);
});

test("filters on has_label, are_different and models", async () => {
  const a = new PreferenceDataset(new PickapicSource(shard, { filters: { hasLabel: true } }), true);
  assert.deepEqual((await a.toArray()).map((p) => p.source.row), [0, 1, 3, 6]);
  assert.equal(a.stats.filtered, 1);
  const b = new PreferenceDataset(new PickapicSource(shard, { filters: { models: ["dreamlike"] } }), true);
  assert.deepEqual((await b.toArray()).map((p) => p.source.row), [6]);
  const c = new PreferenceDataset(new PickapicSource(shard, { filters: { models: (m0, m1) => m0 !== m1 } }), true);
  assert.deepEqual((await c.toArray()).map((p) => p.source.row), [0, 1, 3, 7]);
  const d = new PreferenceDataset(new PickapicSource(shard, { filters: { areDifferent: false } }), true);
  assert.deepEqual(await d.toArray(), []);
  assert.equal(d.stats.filtered, 6); // filters apply before tie dropping: rows 0,1,2,3,6,7
});

test("a directory or glob of shards is one data set", async () => {
  const sub = tempDir();
  copyFileSync(shard, join(sub, "train-00000.parquet"));
  copyFileSync(shard, join(sub, "train-00001.parquet"));
  copyFileSync(shard, join(sub, "other.parquet"));
  const all = new PickapicSource(sub, { checkImages: false });
  assert.equal(all.files.length, 3);
  assert.equal((await all.units()).length, 9);
  const glob = new PickapicSource(join(sub, "train-*.parquet"));
  assert.deepEqual(glob.files.map((f) => f.slice(sub.length + 1)), ["train-00000.parquet", "train-00001.parquet"]);
  const ds = new PreferenceDataset(glob, true);
  const pairs = await ds.toArray();
  assert.equal(pairs.length, 10);
  assert.equal(pairs[5]!.source.file, join(sub, "train-00001.parquet"));
  assert.throws(() => new PickapicSource(join(sub, "nothing-*.parquet")), /no parquet files found/);
});

test("missing columns and wrong types are named", async () => {
  const p = join(dir, "nolabel.parquet");
  writePickapic(p, rows.slice(0, 2), { omit: ["label_1"] });
  await assert.rejects(new PreferenceDataset(new PickapicSource(p)).toArray(), (e: unknown) =>
    e instanceof DataError && e.reason === "missing-column" && e.field === "label_1" && /missing column\(s\) label_1/.test(e.message));
  const skipped = new PreferenceDataset(new PickapicSource(p), true);
  assert.deepEqual(await skipped.toArray(), []);
  assert.equal(skipped.stats.skipped["missing-column"], 2);
  const q = join(dir, "nullcap.parquet");
  writePickapic(q, [{ ...rows[0]!, caption: null }]);
  await assert.rejects(new PreferenceDataset(new PickapicSource(q)).toArray(), /row 0, field 'caption': caption is null/);
});

test("reading one row group touches only that row group's bytes", async () => {
  const big = join(dir, "big.parquet");
  const bigRows: PickRow[] = [];
  // noisy JPEGs (about 60 kB each) so the file is larger than hyparquet's first footer fetch (512 kB)
  for (let i = 0; i < 8; i++) bigRows.push({ caption: `r${i}`, jpg_0: await noiseJpeg(256, 2 * i), jpg_1: await noiseJpeg(256, 2 * i + 1), label_0: 1, label_1: 0 });
  writePickapic(big, bigRows, { rowGroupSize: 2 });
  const size = statSync(big).size;
  let read = 0;
  const src = new PickapicSource(big, {
    openFile: async (p) => {
      const f = await asyncBufferFromFile(p);
      return { byteLength: f.byteLength, slice: (s: number, e?: number) => { read += (e ?? f.byteLength) - s; return f.slice(s, e); } };
    },
  });
  await src.units();
  const footer = read;
  assert.ok(size > 600_000, `fixture is ${size} bytes`);
  assert.ok(footer <= 512 * 1024 + 16, `footer read ${footer} of ${size}`);
  const rows = await src.readUnit(2);
  assert.equal(rows.length, 2);
  const unitBytes = read - footer;
  // row group 2 lies in the part of the file the footer fetch did not cover; reading it
  // fetches about a quarter of the file, never the whole file
  assert.ok(unitBytes < size / 2, `row group read ${unitBytes} of ${size} bytes`);
  assert.ok(unitBytes > size / 8, `row group read ${unitBytes} of ${size} bytes`);
});
