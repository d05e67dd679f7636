import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { JsonlSource } from "../../src/data/jsonl.js";
import { PickapicSource } from "../../src/data/pickapic.js";
import { PreferenceLoader, type PreferenceBatch } from "../../src/data/loader.js";
import { DataError } from "../../src/data/errors.js";
import { jpeg, tempDir, writePickapic, type PickRow } from "./_fixtures.js";

const N = 10;
let file = "";
let shard = "";

/** Pair i: chosen is solid grey level 10·i + 5, rejected solid 250 − 10·i (on all 3 channels). */
const chosenLevel = (i: number) => 10 * i + 5;
const rejectedLevel = (i: number) => 250 - 10 * i;

async function solid(w: number, h: number, v: number): Promise<Buffer> {
  return sharp({ create: { width: w, height: h, channels: 3, background: { r: v, g: v, b: v } } }).png().toBuffer();
}

before(async () => {
  const root = tempDir("dpo-loader-");
  mkdirSync(join(root, "img"));
  const lines: string[] = [];
  for (let i = 0; i < N; i++) {
    writeFileSync(join(root, "img", `c${i}.png`), await solid(12, 10, chosenLevel(i)));
    writeFileSync(join(root, "img", `r${i}.png`), await solid(10, 14, rejectedLevel(i)));
    // odd pairs in label form with the winner second, to check the swap reaches the pixels
    lines.push(
      i % 2 === 0
        ? JSON.stringify({ id: `p${i}`, prompt: `prompt ${i}`, chosen: `img/c${i}.png`, rejected: `img/r${i}.png` })
        : JSON.stringify({ id: `p${i}`, prompt: `prompt ${i}`, image_0: `img/r${i}.png`, image_1: `img/c${i}.png`, label_0: 0, label_1: 1 }),
    );
  }
  writeFileSync(join(root, "img", "bad.png"), "corrupt");
  lines.push(JSON.stringify({ id: "bad", prompt: "corrupt", chosen: "img/c0.png", rejected: "img/bad.png" }));
  lines.push(JSON.stringify({ id: "tie", prompt: "tie", image_0: "img/c0.png", image_1: "img/r0.png", label_0: 0.5, label_1: 0.5 }));
  file = join(root, "pairs.jsonl");
  writeFileSync(file, lines.join("\n") + "\n");

  const rows: PickRow[] = [];
  for (let i = 0; i < 12; i++) rows.push({ caption: `row ${i}`, jpg_0: await jpeg(8, 8, [i * 10, 0, 0]), jpg_1: await jpeg(8, 8, [0, i * 10, 0]), label_0: 1, label_1: 0 });
  shard = join(root, "shard.parquet");
  writePickapic(shard, rows, { rowGroupSize: 3 });
});

async function collect(loader: PreferenceLoader, epochs = 1): Promise<PreferenceBatch[]> {
  const out: PreferenceBatch[] = [];
  for await (const b of loader.batches(epochs)) out.push(b);
  return out;
}

const res = 4;
const per = 3 * res * res;

test("batch layout [chosen..., rejected...], winner first, values in [−1, 1]", async () => {
  const loader = new PreferenceLoader(new JsonlSource(file), { batchSize: 4, augment: { resolution: res }, skipBad: true, workers: 1 });
  const batches = await collect(loader);
  assert.equal(batches.length, 2); // 10 good pairs, dropLast
  for (const b of batches) {
    assert.deepEqual(b.shape, [8, 3, res, res]);
    assert.equal(b.pixels.length, 8 * per);
    b.ids.forEach((id, k) => {
      const i = Number(id.slice(1));
      assert.equal(b.prompts[k], `prompt ${i}`);
      const c = b.pixels.subarray(k * per, (k + 1) * per);
      const r = b.pixels.subarray((4 + k) * per, (5 + k) * per);
      for (const v of c) assert.ok(Math.abs(v - (chosenLevel(i) / 127.5 - 1)) < 1e-6, `chosen of ${id}`);
      for (const v of r) assert.ok(Math.abs(v - (rejectedLevel(i) / 127.5 - 1)) < 1e-6, `rejected of ${id}`);
    });
  }
  assert.equal(loader.stats.tiesDropped, 1);
  assert.deepEqual(loader.stats.skipped, { "corrupt-image": 1 });
  assert.equal(loader.stats.pairs, 10);
});

test("a corrupt image stops the loader without skipBad, naming row and field", async () => {
  const loader = new PreferenceLoader(new JsonlSource(file), { batchSize: 2, augment: { resolution: res }, shuffle: false, workers: 0 });
  await assert.rejects(collect(loader), (e: unknown) => e instanceof DataError && e.row === 10 && e.field === "rejected" && e.reason === "corrupt-image");
});

test("deterministic per (seed, epoch); worker threads and inline decoding agree; epochs differ", async () => {
  const opts = { batchSize: 2, augment: { resolution: res, crop: "random" as const, flip: true }, skipBad: true, dropLast: false, seed: 3 };
  const a = await collect(new PreferenceLoader(new JsonlSource(file), { ...opts, workers: 2 }), 2);
  const b = await collect(new PreferenceLoader(new JsonlSource(file), { ...opts, workers: 0 }), 2);
  assert.equal(a.length, 10);
  assert.deepEqual(a.map((x) => x.ids), b.map((x) => x.ids));
  a.forEach((x, i) => assert.deepEqual(x.pixels, b[i]!.pixels));
  const e0 = a.filter((x) => x.epoch === 0).flatMap((x) => x.ids);
  const e1 = a.filter((x) => x.epoch === 1).flatMap((x) => x.ids);
  assert.deepEqual([...e0].sort(), Array.from({ length: N }, (_, i) => `p${i}`).sort(), "each pair once per epoch");
  assert.notDeepEqual(e0, e1, "a new order each epoch");
  const other = await collect(new PreferenceLoader(new JsonlSource(file), { ...opts, seed: 4, workers: 0 }), 1);
  assert.notDeepEqual(other.flatMap((x) => x.ids), e0);
});

test("state/restore resumes exactly where a run stopped", async () => {
  const opts = { batchSize: 3, augment: { resolution: res, crop: "random" as const }, skipBad: true, seed: 11, workers: 0 };
  const full = await collect(new PreferenceLoader(new JsonlSource(file), opts), 3);
  const first = new PreferenceLoader(new JsonlSource(file), opts);
  const got: PreferenceBatch[] = [];
  for await (const b of first.batches(3)) {
    got.push(b);
    if (got.length === 4) break; // stop mid-epoch 1
  }
  const saved = JSON.parse(JSON.stringify(first.state()));
  assert.equal(saved.epoch, 1);
  const second = new PreferenceLoader(new JsonlSource(file), opts);
  second.restore(saved);
  for await (const b of second.batches(3 - saved.epoch)) got.push(b);
  assert.deepEqual(got.map((b) => b.ids), full.map((b) => b.ids));
  got.forEach((b, i) => assert.deepEqual(b.pixels, full[i]!.pixels));
  assert.throws(() => new PreferenceLoader(new JsonlSource(file), { ...opts, seed: 12 }).restore(saved), /saved with seed 11/);
});

test("ranks read disjoint parts: rows of one unit, or whole row groups of parquet shards", async () => {
  for (const make of [() => new JsonlSource(file), () => new PickapicSource(shard)]) {
    const seen: string[][] = [];
    for (let rank = 0; rank < 2; rank++) {
      const l = new PreferenceLoader(make(), { batchSize: 1, augment: { resolution: res }, skipBad: true, rank, worldSize: 2, workers: 0, seed: 5 });
      seen.push((await collect(l)).flatMap((b) => b.ids));
    }
    const [r0, r1] = seen as [string[], string[]];
    assert.ok(r0.length > 0 && r1.length > 0);
    assert.equal(r0.filter((id) => r1.includes(id)).length, 0, "disjoint");
    assert.equal(new Set([...r0, ...r1]).size, make() instanceof PickapicSource ? 12 : N, "together they cover the data");
  }
  // parquet: 4 row groups of 3 rows → each rank gets 2 whole row groups
  const l = new PreferenceLoader(new PickapicSource(shard), { batchSize: 1, augment: { resolution: res }, rank: 1, worldSize: 2, workers: 0 });
  const items = await l.order(0);
  assert.equal(new Set(items.map((i) => i.unit)).size, 2);
  assert.equal(items.length, 6);
  assert.throws(() => new PreferenceLoader(new PickapicSource(shard), { batchSize: 1, augment: { resolution: res }, rank: 2, worldSize: 2 }), /rank must be in 0\.\.1/);
});

test("an epoch too small for one batch is an error, not an endless loop", async () => {
  const l = new PreferenceLoader(new JsonlSource(file), { batchSize: 64, augment: { resolution: res }, skipBad: true, workers: 0 });
  await assert.rejects(collect(l, Infinity), /produced no batch of 64 pairs/);
});
