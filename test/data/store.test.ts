import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import Database from "better-sqlite3";
import { PreferenceStore, STORE_SCHEMA_VERSION } from "../../src/data/store.js";
import { startWorker } from "../../src/data/threads.js";
import { PreferenceDataset } from "../../src/data/dataset.js";
import { PickapicSource } from "../../src/data/pickapic.js";
import { JsonlSource } from "../../src/data/jsonl.js";
import { jpeg, png, tempDir } from "./_fixtures.js";

async function filled(path: string): Promise<{ store: PreferenceStore; pairs: number[]; imgs: number[] }> {
  const store = new PreferenceStore(path);
  const imgs: number[] = [];
  const pairs: number[] = [];
  for (let p = 0; p < 4; p++) {
    const a = store.addImage({ prompt: `prompt ${p}`, data: await png(8, 8, [p * 40, 0, 0]), format: "png", model: "tiny", seed: p });
    const b = store.addImage({ prompt: `prompt ${p}`, data: await jpeg(8, 8, [0, p * 40, 0]), format: "jpg", model: "tiny", seed: 100 + p });
    imgs.push(a, b);
    pairs.push(store.addPair(a, b));
  }
  return { store, pairs, imgs };
}

test("schema: created at the current version, WAL, migration is idempotent", async () => {
  const path = join(tempDir("dpo-store-"), "prefs.db");
  const s1 = new PreferenceStore(path);
  assert.equal(s1.version(), STORE_SCHEMA_VERSION);
  assert.equal(s1.db.pragma("journal_mode", { simple: true }), "wal");
  s1.addPrompt("x");
  s1.close();
  const s2 = new PreferenceStore(path);
  assert.equal(s2.version(), STORE_SCHEMA_VERSION);
  assert.equal(s2.counts().prompts, 1);
  s2.close();
  // a store written by newer code is refused, not damaged
  const raw = new Database(path);
  raw.prepare("UPDATE schema_version SET version = 99").run();
  raw.close();
  assert.throws(() => new PreferenceStore(path), /schema version 99 is newer/);
});

test("images, pairs, votes: idempotent per rater, undo, nextPairFor", async () => {
  const { store, pairs, imgs } = await filled(":memory:");
  assert.deepEqual(store.counts(), { prompts: 4, images: 8, pairs: 4, votes: 0, aiLabels: 0 });
  assert.equal(store.addPair(imgs[0]!, imgs[1]!), pairs[0], "same pair again → same id");
  assert.equal(store.addPair(imgs[1]!, imgs[0]!), pairs[0], "reversed pair → same id");
  assert.throws(() => store.addPair(imgs[0]!, imgs[2]!), /different prompts/);
  assert.equal(store.image(imgs[0]!)!.seed, 0);
  assert.deepEqual(store.imageBytes(imgs[0]!).subarray(0, 4), new Uint8Array([0x89, 0x50, 0x4e, 0x47]));

  assert.deepEqual(store.vote(pairs[0]!, "ann", "a"), { created: true });
  assert.deepEqual(store.vote(pairs[0]!, "ann", "b"), { created: false }); // changes her mind
  assert.equal(store.votesFor(pairs[0]!).length, 1);
  assert.equal(store.votesFor(pairs[0]!)[0]!.choice, "b");
  assert.throws(() => store.vote(pairs[0]!, "ann", "c" as never), /choice must be/);
  assert.throws(() => store.vote(999, "ann", "a"), /no pair 999/);

  // ann has seen pair 0; she gets the least-voted unseen pair next
  assert.equal(store.nextPairFor("ann")!.id, pairs[1]);
  assert.equal(store.nextPairFor("bob")!.id, pairs[1], "pair 0 already has a vote, so bob starts with an unvoted pair");
  store.vote(pairs[1]!, "ann", "skip");
  assert.equal(store.nextPairFor("ann")!.id, pairs[2]);
  assert.equal(store.undoVote(pairs[1]!, "ann"), true);
  assert.equal(store.undoVote(pairs[1]!, "ann"), false);
  assert.equal(store.nextPairFor("ann")!.id, pairs[1]);
  for (const id of pairs) store.vote(id, "ann", "a");
  assert.equal(store.nextPairFor("ann"), null);
  store.close();
});

test("resolution: vote plurality, ties, AI labels with margin; the store as a reader", async () => {
  const { store, pairs, imgs } = await filled(":memory:");
  const [p0, p1, p2, p3] = pairs as [number, number, number, number];
  store.vote(p0, "ann", "b");
  store.vote(p0, "bob", "b");
  store.vote(p0, "cy", "a"); // b wins 2:1
  store.vote(p1, "ann", "a");
  store.vote(p1, "bob", "b"); // 1:1 → tie
  store.vote(p2, "ann", "skip"); // only a skip → unlabelled for humans
  store.setAiLabel(p2, "pickscore", 0.3, 0.9); // AI: b
  store.setAiLabel(p3, "pickscore", 0.5, 0.49); // within margin 0.05 → tie
  assert.deepEqual(store.resolve(p0), { winner: "b", by: "human", votes: 3 });
  assert.deepEqual(store.resolve(p1), { winner: "tie", by: "human", votes: 2 });
  assert.deepEqual(store.resolve(p2), { winner: "b", by: "ai", votes: 0 });
  assert.deepEqual(store.resolve(p2, { labels: "human" }), { winner: null });
  assert.deepEqual(store.resolve(p3, { margin: 0.05 }), { winner: "tie", by: "ai", votes: 0 });
  assert.deepEqual(store.resolve(p3), { winner: "a", by: "ai", votes: 0 });
  assert.equal(store.labelsFor(p2)[0]!.scoreB, 0.9);

  const ds = new PreferenceDataset(store.source({ margin: 0.05, unitSize: 3, checkImages: true }));
  const got = await ds.toArray();
  assert.deepEqual(got.map((p) => p.id), [String(p0), String(p2)]);
  // winner first: pair 0 was won by image b
  assert.deepEqual(got[0]!.chosen, store.imageBytes(imgs[1]!));
  assert.deepEqual(got[0]!.rejected, store.imageBytes(imgs[0]!));
  assert.equal(ds.stats.tiesDropped, 2);
  assert.equal(ds.stats.swapped, 2);
  assert.equal((await store.source({ unitSize: 3 }).units()).length, 2);
  store.close();
});

test("export to JSONL and Pick-a-Pic parquet round-trips through the readers", async () => {
  const dir = tempDir("dpo-store-");
  const { store, pairs, imgs } = await filled(join(dir, "s.db"));
  store.vote(pairs[0]!, "ann", "b");
  store.vote(pairs[1]!, "ann", "a");
  store.vote(pairs[2]!, "ann", "tie");
  const { pairs: n } = await store.exportJsonl(join(dir, "out.jsonl"));
  assert.equal(n, 2);
  const fromJsonl = await new PreferenceDataset(new JsonlSource(join(dir, "out.jsonl"), { checkImages: true })).toArray();
  assert.deepEqual(fromJsonl.map((p) => p.prompt), ["prompt 0", "prompt 1"]);
  assert.deepEqual(readFileSync(fromJsonl[0]!.chosen as string), Buffer.from(store.imageBytes(imgs[1]!)));

  const { rows } = await store.exportParquet(join(dir, "out.parquet"), { includeTies: true });
  assert.equal(rows, 3);
  const ds = new PreferenceDataset(new PickapicSource(join(dir, "out.parquet"), { checkImages: true }));
  const fromParquet = await ds.toArray();
  assert.deepEqual(fromParquet.map((p) => p.id), [String(pairs[0]), String(pairs[1])]);
  assert.equal(ds.stats.tiesDropped, 1);
  // jpg_1 (image b, already JPEG) won pair 0 and is stored byte for byte
  assert.deepEqual(fromParquet[0]!.chosen, store.imageBytes(imgs[1]!));
  const rej = fromParquet[0]!.rejected as Uint8Array;
  assert.deepEqual([rej[0], rej[1]], [0xff, 0xd8], "PNG images are re-encoded as JPEG");
  store.close();
});

test("concurrent writers: two worker threads voting at once store every vote once", async () => {
  const path = join(tempDir("dpo-store-"), "concurrent.db");
  const { store, pairs } = await filled(path);
  const more: number[] = [...pairs];
  for (let p = 0; p < 26; p++) {
    const a = store.addImage({ prompt: `extra ${p}`, path: `/images/${p}a.png` });
    const b = store.addImage({ prompt: `extra ${p}`, path: `/images/${p}b.png` });
    more.push(store.addPair(a, b));
  }
  store.close();
  const run = (rater: string) =>
    new Promise<{ created: number }>((resolve, reject) => {
      const w = startWorker(import.meta.url, "_storeVoter", { workerData: { path, rater, pairIds: more, rounds: 3 } });
      w.once("message", resolve);
      w.once("error", reject);
    });
  // two raters at once, plus the same rater from two threads
  const results = await Promise.all([run("ann"), run("bob"), run("cy"), run("cy")]);
  assert.equal(results[0]!.created, 30);
  assert.equal(results[1]!.created, 30);
  assert.equal(results[2]!.created + results[3]!.created, 30, "the same rater from two threads: each vote created once");
  const check = new PreferenceStore(path);
  assert.equal(check.counts().votes, 90);
  // each rater labels pairs 0..2 under its own reward name; both cy threads write the same 3 rows
  assert.equal(check.counts().aiLabels, 9);
  const perPair = check.db.prepare("SELECT pair_id, COUNT(*) AS n FROM votes GROUP BY pair_id").all() as { n: number }[];
  assert.equal(perPair.length, 30);
  assert.ok(perPair.every((r) => r.n === 3));
  check.close();
});
