import { test } from "node:test";
import assert from "node:assert/strict";
import { assertPixelsNear } from "../_close.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { decodeImage } from "../../src/data/images.js";
import { openPreferenceData } from "../../src/data/open.js";
import { PreferenceStore } from "../../src/data/store.js";
import type { ImageSource } from "../../src/data/types.js";
import { candidateSeed, generatePairs, pairIndices } from "../../src/feedback/pairs.js";
import { labelPairs } from "../../src/feedback/label.js";
import type { RewardModel } from "../../src/feedback/reward.js";
import { createTextToImageModel, disposeTextToImageModel } from "../../src/models/pipeline.js";
import { TINY_UNET_CONFIG } from "../../src/models/unet/config.js";
import { setInitSeed } from "../../src/nn/index.js";
import { generate } from "../../src/sample/generate.js";

const dir = mkdtempSync(join(tmpdir(), "feedback-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

/** Brightness reward: mean byte / 255, computed here independently of any library code. */
const brightness: RewardModel = {
  name: "brightness",
  description: "mean pixel value",
  async score(images) {
    return images.map((im) => im.data.reduce((a, v) => a + v, 0) / im.data.length / 255);
  },
};

async function png(value: number, size = 4): Promise<Uint8Array> {
  const b = await sharp(new Uint8Array(size * size * 3).fill(value), { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
  return new Uint8Array(b);
}

async function decode(src: ImageSource): Promise<Uint8Array> {
  return (await decodeImage(src, { source: "test", row: 0, field: "img" })).data;
}

test("pairIndices: all pairs and consecutive disjoint pairs", () => {
  assert.deepEqual(pairIndices(3, "all"), [[0, 1], [0, 2], [1, 2]]);
  assert.equal(pairIndices(5, "all").length, 10);
  assert.deepEqual(pairIndices(5, "consecutive"), [[0, 1], [2, 3]]);
  assert.throws(() => pairIndices(3, "bogus" as "all"), /pairing must be/);
});

test("generatePairs: K candidates per prompt with recorded seeds, paired; re-running does only new work", async () => {
  setInitSeed(0);
  const model = createTextToImageModel({ unet: { ...TINY_UNET_CONFIG, sampleSize: 8 } });
  const store = new PreferenceStore(join(dir, "gen.sqlite"));
  const common = { model, modelName: "tiny", store, k: 3, seed: 7, steps: 1, guidance: 2, batchSize: 4 } as const;
  const events: string[] = [];
  const s1 = await generatePairs({ ...common, prompts: ["a red ball", "a cat"], onEvent: (e) => events.push(e.type) });
  assert.deepEqual({ gen: s1.imagesGenerated, added: s1.pairsAdded, pairs: s1.pairs, skipped: s1.promptsSkipped }, { gen: 6, added: 6, pairs: 6, skipped: 0 });
  assert.deepEqual(events, ["plan", "images", "images", "done"], "6 images in batches of 4");
  const imgs = store.imagesOfPrompt("a cat");
  assert.deepEqual(imgs.map((i) => i.seed), [0, 1, 2].map((j) => candidateSeed(7, "a cat", j)));
  assert.deepEqual(imgs.map((i) => i.meta?.["candidate"]), [0, 1, 2]);
  // a candidate regenerates alone from its recorded seed
  const again = generate({ model, prompts: ["a cat"], seeds: [imgs[1]!.seed!], steps: 1, guidance: 2, sampler: "ddim" });
  // (sampled in a batch of 4 then, alone now: different kernels, equal within one 8-bit level)
  assertPixelsNear(await decode(store.imageBytes(imgs[1]!.id)), again[0]!.data, "candidate regenerated alone");
  // every pair joins two images of one prompt
  for (const id of store.pairIds()) {
    const p = store.pair(id)!;
    assert.equal(store.image(p.imageA)!.promptId, p.promptId);
    assert.equal(store.image(p.imageB)!.promptId, p.promptId);
  }
  // same settings: nothing to do; one more prompt: only its candidates
  const s2 = await generatePairs({ ...common, prompts: ["a red ball", "a cat"] });
  assert.deepEqual({ gen: s2.imagesGenerated, added: s2.pairsAdded, skipped: s2.promptsSkipped }, { gen: 0, added: 0, skipped: 2 });
  const s3 = await generatePairs({ ...common, prompts: ["a red ball", "a cat", "a dog"] });
  assert.deepEqual({ gen: s3.imagesGenerated, added: s3.pairsAdded, pairs: s3.pairs }, { gen: 3, added: 3, pairs: 9 });
  // an interrupted prompt (a candidate missing) gets only the missing candidate
  const dog = store.imagesOfPrompt("a dog");
  store.db.prepare("DELETE FROM pairs WHERE image_a = ? OR image_b = ?").run(dog[2]!.id, dog[2]!.id);
  store.db.prepare("DELETE FROM images WHERE id = ?").run(dog[2]!.id);
  const s4 = await generatePairs({ ...common, prompts: ["a dog"] });
  assert.deepEqual({ gen: s4.imagesGenerated, added: s4.pairsAdded }, { gen: 1, added: 2 });
  // other sampling settings are other candidates
  const s5 = await generatePairs({ ...common, prompts: ["a dog"], steps: 2, k: 2, pairing: "consecutive" });
  assert.deepEqual({ gen: s5.imagesGenerated, added: s5.pairsAdded }, { gen: 2, added: 1 });
  await assert.rejects(generatePairs({ ...common, prompts: ["x"], k: 1 }), /k must be an integer ≥ 2/);
  store.close();
  disposeTextToImageModel(model);
});

test("labelPairs: scores both images, margin ties, openPreferenceData yields the winners", async () => {
  const path = join(dir, "label.sqlite");
  const store = new PreferenceStore(path);
  const values = [40, 200, 120, 122];
  const ids: number[] = [];
  for (const v of values) ids.push(store.addImage({ prompt: v < 150 && v !== 40 ? "grey" : "mixed", data: await png(v), format: "png" }));
  // "mixed": 40 vs 200 (b wins, gap 160/255); "grey": 120 vs 122 (gap 2/255 < margin → tie)
  const p1 = store.addPair(ids[0]!, ids[1]!);
  const p2 = store.addPair(ids[2]!, ids[3]!);
  const margin = 0.05;
  const s = await labelPairs({ store, reward: brightness, margin, batchSize: 1 });
  assert.deepEqual({ labelled: s.labelled, a: s.a, b: s.b, ties: s.ties }, { labelled: 2, a: 0, b: 1, ties: 1 });
  const l1 = store.labelsFor(p1)[0]!;
  assert.deepEqual([l1.reward, l1.scoreA, l1.scoreB, l1.margin], ["brightness", 40 / 255, 200 / 255, margin]);
  assert.ok(Math.abs(s.meanGap - (160 / 255 + 2 / 255) / 2) < 1e-12);
  // idempotent: a second run skips labelled pairs; relabel scores them again
  assert.equal((await labelPairs({ store, reward: brightness, margin })).labelled, 0);
  assert.equal((await labelPairs({ store, reward: brightness, margin, relabel: true })).labelled, 2);
  store.close();

  // training reads the labelled pair with the brighter image first; the tie is dropped and counted
  const data = openPreferenceData(path);
  const pairs = await data.toArray();
  assert.equal(pairs.length, 1);
  assert.equal(pairs[0]!.id, String(p1));
  assert.equal((await decode(pairs[0]!.chosen))[0], 200);
  assert.equal((await decode(pairs[0]!.rejected))[0], 40);
  assert.equal(data.stats.tiesDropped, 1);
  assert.equal(data.stats.swapped, 1);
  await data.close();
  // a reader's own margin overrides the stored one
  const strict = openPreferenceData(path, { labels: { margin: 0 } });
  assert.deepEqual((await strict.toArray()).map((p) => p.id), [String(p1), String(p2)]);
  await strict.close();
});

test("export → openPreferenceData round trip keeps every pair and label (JSONL and Pick-a-Pic parquet)", async () => {
  const path = join(dir, "export.sqlite");
  const store = new PreferenceStore(path);
  const want = new Map<string, [number, number]>(); // prompt → [chosen value, rejected value]
  for (let i = 0; i < 5; i++) {
    const prompt = `prompt ${i}`;
    const a = store.addImage({ prompt, data: await png(30 + 40 * i), format: "png" });
    const b = store.addImage({ prompt, data: await png(220 - 40 * i), format: "png" });
    store.addPair(a, b);
  }
  await labelPairs({ store, reward: brightness, margin: 0.01 });
  for (let i = 0; i < 5; i++) {
    const va = 30 + 40 * i, vb = 220 - 40 * i;
    if (Math.abs(va - vb) / 255 > 0.01) want.set(`prompt ${i}`, va > vb ? [va, vb] : [vb, va]);
  }
  assert.equal(want.size, 5);
  const jsonl = join(dir, "out", "pairs.jsonl");
  const parquet = join(dir, "out", "pairs.parquet");
  assert.equal((await store.exportJsonl(jsonl)).pairs, 5);
  assert.equal((await store.exportParquet(parquet)).rows, 5);
  store.close();
  for (const file of [jsonl, parquet]) {
    const data = openPreferenceData(file);
    const got = await data.toArray();
    assert.equal(got.length, 5, file);
    for (const p of got) {
      const [c, r] = want.get(p.prompt)!;
      // PNG bytes round-trip exactly; the parquet holds JPEG re-encodings (flat greys stay within ±2)
      assert.ok(Math.abs((await decode(p.chosen))[0]! - c) <= 2, `${file} ${p.prompt} chosen`);
      assert.ok(Math.abs((await decode(p.rejected))[0]! - r) <= 2, `${file} ${p.prompt} rejected`);
    }
    await data.close();
  }
});

test("store schema v1 → v2: AI labels written before the margin column resolve with margin 0", async () => {
  const path = join(dir, "v1.sqlite");
  const s = new PreferenceStore(path);
  const a = s.addImage({ prompt: "p", data: await png(10), format: "png" });
  const b = s.addImage({ prompt: "p", data: await png(20), format: "png" });
  const pair = s.addPair(a, b);
  // turn the file back into a version-1 store holding one label
  s.db.exec("ALTER TABLE ai_labels DROP COLUMN margin");
  s.db.prepare("INSERT INTO ai_labels (pair_id, reward, score_a, score_b, created_at) VALUES (?, 'r', 0.5, 0.4, 'then')").run(pair);
  s.db.prepare("UPDATE schema_version SET version = 1").run();
  s.close();
  assert.throws(() => new PreferenceStore(path, { readonly: true }), /schema version 1, this code reads 2; open it once read-write/);
  const up = new PreferenceStore(path);
  assert.equal(up.version(), 2);
  assert.equal(up.labelsFor(pair)[0]!.margin, 0);
  assert.deepEqual(up.resolve(pair), { winner: "a", by: "ai", votes: 0 });
  up.close();
});
