import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  EMOJI_CATEGORIES, compositeAndShrink, emojiImage, emojiPackageDir, listEmoji, loadEmojiDataset, readRgba,
} from "../../src/datasets/emoji.js";

interface GoldenCase { file: string; size: number; pixels: number[]; pilBox: number[] }
const golden = JSON.parse(readFileSync(new URL("../golden/datasets/emoji.json", import.meta.url), "utf8")) as { cases: GoldenCase[] };

test("composite on white + box shrink matches numpy, and PIL's BOX resize within 1", async () => {
  assert.ok(golden.cases.length >= 4);
  for (const c of golden.cases) {
    const img = await readRgba(join(emojiPackageDir(), "img", "google", "64", c.file));
    const ours = compositeAndShrink(img.data, img.width, img.height, c.size);
    assert.equal(ours.length, c.pixels.length);
    let maxNumpy = 0;
    let maxPil = 0;
    for (let i = 0; i < ours.length; i++) {
      maxNumpy = Math.max(maxNumpy, Math.abs(ours[i]! - c.pixels[i]!));
      maxPil = Math.max(maxPil, Math.abs(ours[i]! - c.pilBox[i]!));
    }
    assert.equal(maxNumpy, 0, `${c.file} at ${c.size}px differs from numpy by ${maxNumpy}`);
    assert.ok(maxPil <= 1, `${c.file} at ${c.size}px differs from PIL by ${maxPil}`);
  }
});

test("counts: 3,786 images minus 5 skin-tone swatches, 9 categories, split sizes add up", async () => {
  const all = await loadEmojiDataset({ split: "all" });
  const train = await loadEmojiDataset({ split: "train" });
  const held = await loadEmojiDataset({ split: "heldout" });
  assert.equal(all.items.length, 3781);
  assert.equal(listEmoji({ skinTones: false }).length, 1906);
  assert.equal(train.items.length + held.items.length, all.items.length);
  assert.equal(all.pixels.length, 3781 * 32 * 32 * 3);
  assert.equal(train.pixels.length, train.items.length * 32 * 32 * 3);
  assert.deepEqual(new Set(all.items.map((i) => i.category)), new Set(EMOJI_CATEGORIES));
  // about 10% of base emoji held out, in every category
  const baseHeld = new Set(held.items.map((i) => i.baseName)).size;
  const baseAll = new Set(all.items.map((i) => i.baseName)).size;
  assert.ok(baseHeld / baseAll > 0.09 && baseHeld / baseAll < 0.12, `held-out fraction ${baseHeld / baseAll}`);
  for (const c of EMOJI_CATEGORIES) {
    assert.ok(held.items.some((i) => i.category === c), `no held-out ${c}`);
    assert.ok(train.items.some((i) => i.category === c), `no training ${c}`);
  }
});

test("captions are built from names, subcategories and categories", async () => {
  const all = await loadEmojiDataset({ split: "all" });
  const byName = new Map(all.items.map((i) => [i.name, i]));
  assert.equal(byName.get("grinning face")?.caption, "grinning face, face smiling, smileys & emotion");
  assert.equal(byName.get("waving hand sign: medium skin tone")?.caption, "waving hand sign: medium skin tone, hand fingers open, people & body");
  const flag = all.items.find((i) => i.image === "1f1ea-1f1ec.png");
  assert.equal(flag?.caption, "egypt flag, country flag, flags");
  assert.equal(flag?.label, EMOJI_CATEGORIES.indexOf("Flags"));
  for (const it of all.items) {
    assert.equal(it.caption, it.caption.toLowerCase());
    assert.ok(it.caption.startsWith(`${it.name}, `));
    assert.equal(EMOJI_CATEGORIES[it.label], it.category);
  }
});

test("the split is disjoint by base emoji and deterministic", async () => {
  const train = await loadEmojiDataset({ split: "train" });
  const held = await loadEmojiDataset({ split: "heldout" });
  const trainBases = new Set(train.items.map((i) => i.baseName));
  for (const it of held.items) assert.ok(!trainBases.has(it.baseName), `${it.baseName} is in both splits`);
  const again = listEmoji().filter((i) => i.heldout).map((i) => i.name);
  assert.deepEqual(again, held.items.map((i) => i.name));
  // skin-tone variants follow their base emoji
  const variants = held.items.filter((i) => i.name !== i.baseName);
  assert.ok(variants.length > 0);
});

test("pixels are RGB bytes on a white background; the cache reproduces a fresh build", async () => {
  const all = await loadEmojiDataset({ split: "all" });
  const g = golden.cases.find((c) => c.file === "1f600.png" && c.size === 32)!;
  const i = all.items.findIndex((it) => it.image === "1f600.png");
  assert.deepEqual(Array.from(emojiImage(all, i)), g.pixels);
  // corners of emoji are background: white
  let whiteCorners = 0;
  for (let k = 0; k < all.items.length; k++) {
    const px = emojiImage(all, k);
    if (px[0] === 255 && px[1] === 255 && px[2] === 255) whiteCorners++;
  }
  assert.ok(whiteCorners / all.items.length > 0.5, `${whiteCorners} white corners`);
  let min = 255, max = 0;
  for (const v of all.pixels) { if (v < min) min = v; if (v > max) max = v; }
  assert.equal(max, 255);
  assert.ok(min < 20);

  const dir = mkdtempSync(join(tmpdir(), "emoji-cache-"));
  try {
    const fresh = await loadEmojiDataset({ split: "heldout", size: 16, cacheDir: dir });
    // the first load writes the cache; the second reads it back without rewriting it (checked by
    // the files' modification times, not by timing the loads, which a busy machine makes flaky)
    const written = readdirSync(dir).map((f) => [f, statSync(join(dir, f)).mtimeMs] as const);
    assert.ok(written.length > 0, "the first load wrote a cache file");
    const cached = await loadEmojiDataset({ split: "heldout", size: 16, cacheDir: dir });
    assert.deepEqual(cached.items, fresh.items);
    assert.deepEqual(cached.pixels, fresh.pixels);
    assert.deepEqual(readdirSync(dir).map((f) => [f, statSync(join(dir, f)).mtimeMs] as const), written, "the cache was read, not rebuilt");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await assert.rejects(loadEmojiDataset({ size: 24 }), /size must divide 64/);
});
