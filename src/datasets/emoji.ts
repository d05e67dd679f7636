// The embedded default pretraining data set: Google's emoji from the npm package
// `emoji-datasource-google` (Apache-2.0), as (image, caption, category) triples.
//
// Preparation, once per size (then cached, so later loads take well under a second):
// 1. emoji.json lists 1,911 base emoji; 323 of them have skin-tone variants (1,875 more images),
//    3,786 images in all, each a 64×64 RGBA PNG under img/google/64/.
// 2. The 5 "Component" entries (bare skin-tone swatches) are dropped: they are colour squares, not
//    emoji, and form a category of their own. That leaves 3,781 images in 9 categories.
// 3. Each image is composited on white (out = c·α + 255·(1−α), rounded) and box-averaged down to
//    size×size RGB (size must divide 64: 64, 32, 16 or 8).
// 4. The caption is "<name>, <subcategory words>, <category>" in lower case, e.g.
//    "grinning face, face smiling, smileys & emotion"; a skin-tone variant appends the tone to the
//    name: "waving hand: medium skin tone, hand fingers open, people & body".
// 5. Held-out split: within each category the base emoji are ordered by a SHA-256 hash of their
//    name and the first ⌈10%⌉ are held out, with all their skin-tone variants (so no near-duplicate
//    of a held-out image is ever trained on). Deterministic, and every category has held-out items.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import sharp from "sharp";
import type { Tensor } from "../tensor/index.js";
import { pixelsToTensor } from "../tensor/pixels.js";

/** The 9 emoji categories, in the order of their class ids. */
export const EMOJI_CATEGORIES = [
  "Smileys & Emotion",
  "People & Body",
  "Animals & Nature",
  "Food & Drink",
  "Travel & Places",
  "Activities",
  "Objects",
  "Symbols",
  "Flags",
] as const;
export type EmojiCategory = (typeof EMOJI_CATEGORIES)[number];

export type EmojiSplit = "train" | "heldout" | "all";

export interface EmojiItem {
  /** Lower-case name, e.g. "grinning face" or "waving hand: medium skin tone". */
  name: string;
  /** Name of the base emoji (without skin tone): the unit the held-out split is drawn over. */
  baseName: string;
  caption: string;
  category: EmojiCategory;
  /** Index into EMOJI_CATEGORIES. */
  label: number;
  subcategory: string;
  /** The source PNG's file name under img/google/64/. */
  image: string;
  heldout: boolean;
}

export interface EmojiDataset {
  size: number;
  split: EmojiSplit;
  items: EmojiItem[];
  /** Uint8 RGB, [N, size, size, 3] row-major (HWC per image). */
  pixels: Uint8Array;
  /** Version of emoji-datasource-google the images came from. */
  sourceVersion: string;
}

export interface LoadEmojiOptions {
  split?: EmojiSplit;
  /** Output side length; must divide 64. Default 32. */
  size?: number;
  /** Include skin-tone variants (default true). */
  skinTones?: boolean;
  /** Fraction of each category's base emoji held out (default 0.1). */
  heldoutFraction?: number;
  /** Where prepared arrays are cached; default node_modules/.cache/diffusion-dpo (or $DIFFUSION_DPO_CACHE). */
  cacheDir?: string;
  /** Ignore and rewrite the cache. */
  refresh?: boolean;
}

const FORMAT_VERSION = 1;
const SOURCE_SIZE = 64;
const SKIN_TONES: Record<string, string> = {
  "1F3FB": "light",
  "1F3FC": "medium-light",
  "1F3FD": "medium",
  "1F3FE": "medium-dark",
  "1F3FF": "dark",
};

interface RawEmoji {
  name: string | null;
  image: string;
  category: string;
  subcategory: string;
  sort_order: number;
  has_img_google: boolean;
  skin_variations?: Record<string, { image: string; has_img_google: boolean }>;
}

/** Folder of the installed emoji-datasource-google package. */
export function emojiPackageDir(): string {
  const require = createRequire(import.meta.url);
  try {
    return dirname(require.resolve("emoji-datasource-google/package.json"));
  } catch {
    throw new Error("the emoji data set needs the npm package emoji-datasource-google; run `npm install` in the project folder");
  }
}

function hashName(name: string): string {
  return createHash("sha256").update(name).digest("hex");
}

function toneName(key: string): string {
  // Keys are one modifier ("1F3FD") or two for two-person emoji ("1F3FB-1F3FD").
  const parts = key.split("-").map((k) => SKIN_TONES[k]);
  if (parts.some((p) => p === undefined)) throw new Error(`emoji.json: unknown skin-tone key "${key}"`);
  const uniq = [...new Set(parts)];
  return uniq.length === 1 ? `${uniq[0]} skin tone` : `${parts.join(", ")} skin tones`;
}

/** The item list (no pixels) in a fixed order: emoji.json's sort_order, variants after their base. */
export function listEmoji(opts: Pick<LoadEmojiOptions, "skinTones" | "heldoutFraction"> = {}): EmojiItem[] {
  const skinTones = opts.skinTones ?? true;
  const fraction = opts.heldoutFraction ?? 0.1;
  if (!(fraction >= 0 && fraction < 1)) throw new Error(`heldoutFraction must be in [0, 1), got ${fraction}`);
  const file = join(emojiPackageDir(), "emoji.json");
  const raw = JSON.parse(readFileSync(file, "utf8")) as RawEmoji[];
  const base = raw
    .filter((e) => e.has_img_google && e.category !== "Component")
    .sort((a, b) => a.sort_order - b.sort_order);
  // Held-out base names, stratified by category.
  const heldout = new Set<string>();
  for (const category of EMOJI_CATEGORIES) {
    const names = [...new Set(base.filter((e) => e.category === category).map((e) => (e.name ?? e.image).toLowerCase()))];
    if (names.length === 0) throw new Error(`${file}: no emoji in category "${category}"; is this a supported emoji-datasource version?`);
    const ranked = names.map((n) => [hashName(n), n] as const).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const k = Math.ceil(names.length * fraction);
    for (const [, n] of ranked.slice(0, k)) heldout.add(n);
  }
  const items: EmojiItem[] = [];
  for (const e of base) {
    const label = EMOJI_CATEGORIES.indexOf(e.category as EmojiCategory);
    if (label < 0) throw new Error(`${file}: emoji "${e.name}" has unknown category "${e.category}"`);
    const category = e.category as EmojiCategory;
    const baseName = (e.name ?? e.image).toLowerCase();
    const tail = `${e.subcategory.replace(/-/g, " ")}, ${category.toLowerCase()}`;
    const isHeld = heldout.has(baseName);
    items.push({ name: baseName, baseName, caption: `${baseName}, ${tail}`, category, label, subcategory: e.subcategory, image: e.image, heldout: isHeld });
    if (skinTones && e.skin_variations) {
      for (const [key, v] of Object.entries(e.skin_variations)) {
        if (!v.has_img_google) continue;
        const name = `${baseName}: ${toneName(key)}`;
        items.push({ name, baseName, caption: `${name}, ${tail}`, category, label, subcategory: e.subcategory, image: v.image, heldout: isHeld });
      }
    }
  }
  return items;
}

/**
 * Composites straight RGBA on white and box-averages to `size`: each output channel is the mean
 * of the (size/64)² block of composited values c·α/255 + 255·(1 − α/255), rounded half up.
 */
export function compositeAndShrink(rgba: Uint8Array, width: number, height: number, size: number): Uint8Array {
  if (width % size !== 0 || height % size !== 0) throw new Error(`cannot box-shrink ${width}×${height} to ${size}×${size}: the size must divide both sides`);
  const fx = width / size;
  const fy = height / size;
  const out = new Uint8Array(size * size * 3);
  const n = fx * fy;
  for (let oy = 0; oy < size; oy++) {
    for (let ox = 0; ox < size; ox++) {
      let r = 0, g = 0, b = 0;
      for (let dy = 0; dy < fy; dy++) {
        for (let dx = 0; dx < fx; dx++) {
          const i = ((oy * fy + dy) * width + ox * fx + dx) * 4;
          const a = rgba[i + 3]! / 255;
          r += rgba[i]! * a + 255 * (1 - a);
          g += rgba[i + 1]! * a + 255 * (1 - a);
          b += rgba[i + 2]! * a + 255 * (1 - a);
        }
      }
      const o = (oy * size + ox) * 3;
      out[o] = Math.min(255, Math.floor(r / n + 0.5));
      out[o + 1] = Math.min(255, Math.floor(g / n + 0.5));
      out[o + 2] = Math.min(255, Math.floor(b / n + 0.5));
    }
  }
  return out;
}

/** Reads one PNG as straight (non-premultiplied) RGBA. */
export async function readRgba(path: string): Promise<{ data: Uint8Array; width: number; height: number }> {
  const { data, info } = await sharp(path).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 4) throw new Error(`${path}: expected 4 channels after decoding, got ${info.channels}`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

export function defaultCacheDir(): string {
  const env = process.env["DIFFUSION_DPO_CACHE"];
  if (env) return env;
  return join(dirname(emojiPackageDir()), ".cache", "diffusion-dpo");
}

interface CacheMeta {
  format: number;
  sourceVersion: string;
  size: number;
  items: EmojiItem[];
}

function writeAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/**
 * The emoji data set at `size`×`size` RGB, the requested split. The first call for a given size
 * and options decodes the 3,781 PNGs (a few seconds) and caches the result; later calls read the
 * cache.
 */
export async function loadEmojiDataset(opts: LoadEmojiOptions = {}): Promise<EmojiDataset> {
  const size = opts.size ?? 32;
  const split = opts.split ?? "train";
  if (!Number.isInteger(size) || size < 1 || SOURCE_SIZE % size !== 0) {
    throw new Error(`emoji data set: size must divide ${SOURCE_SIZE} (64, 32, 16, 8, …), got ${size}`);
  }
  if (!["train", "heldout", "all"].includes(split)) throw new Error(`emoji data set: split must be "train", "heldout" or "all", got "${split}"`);
  const pkgDir = emojiPackageDir();
  const sourceVersion = (JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as { version: string }).version;
  const skinTones = opts.skinTones ?? true;
  const fraction = opts.heldoutFraction ?? 0.1;
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const key = `emoji-v${FORMAT_VERSION}-${sourceVersion}-${size}px-${skinTones ? "tones" : "base"}-${fraction}`;
  const binPath = join(cacheDir, `${key}.u8`);
  const metaPath = join(cacheDir, `${key}.json`);

  let items: EmojiItem[] | undefined;
  let pixels: Uint8Array | undefined;
  if (!opts.refresh && existsSync(binPath) && existsSync(metaPath)) {
    try {
      const meta = JSON.parse(readFileSync(metaPath, "utf8")) as CacheMeta;
      const bin = readFileSync(binPath);
      if (meta.format === FORMAT_VERSION && meta.size === size && bin.byteLength === meta.items.length * size * size * 3) {
        items = meta.items;
        pixels = new Uint8Array(bin.buffer, bin.byteOffset, bin.byteLength);
      }
    } catch {
      items = undefined; // unreadable cache: rebuild below
    }
  }
  if (items === undefined || pixels === undefined) {
    items = listEmoji({ skinTones, heldoutFraction: fraction });
    pixels = new Uint8Array(items.length * size * size * 3);
    const imgDir = join(pkgDir, "img", "google", "64");
    const per = size * size * 3;
    const list = items;
    const out = pixels;
    // Decode a few at a time: sharp works on libuv's thread pool.
    const width = 8;
    for (let start = 0; start < list.length; start += width) {
      const batch = list.slice(start, start + width);
      const decoded = await Promise.all(batch.map((it) => readRgba(join(imgDir, it.image))));
      decoded.forEach((d, j) => {
        out.set(compositeAndShrink(d.data, d.width, d.height, size), (start + j) * per);
      });
    }
    mkdirSync(cacheDir, { recursive: true });
    writeAtomic(binPath, pixels);
    writeAtomic(metaPath, JSON.stringify({ format: FORMAT_VERSION, sourceVersion, size, items } satisfies CacheMeta));
  }
  return selectSplit({ size, split: "all", items, pixels, sourceVersion }, split);
}

/** The items (and their pixels) of one split. */
export function selectSplit(ds: EmojiDataset, split: EmojiSplit): EmojiDataset {
  if (split === "all") return { ...ds, split };
  const want = split === "heldout";
  const per = ds.size * ds.size * 3;
  const idx: number[] = [];
  ds.items.forEach((it, i) => { if (it.heldout === want) idx.push(i); });
  const pixels = new Uint8Array(idx.length * per);
  idx.forEach((i, j) => pixels.set(ds.pixels.subarray(i * per, (i + 1) * per), j * per));
  return { size: ds.size, split, items: idx.map((i) => ds.items[i]!), pixels, sourceVersion: ds.sourceVersion };
}

/** Image i of a data set as its own Uint8Array (HWC RGB). */
export function emojiImage(ds: EmojiDataset, i: number): Uint8Array {
  const per = ds.size * ds.size * 3;
  if (i < 0 || i >= ds.items.length) throw new Error(`emoji index ${i} is out of range (${ds.items.length} items)`);
  return ds.pixels.slice(i * per, (i + 1) * per);
}

/**
 * Images `indices` of a data set as a float tensor [B, 3, size, size] scaled to [−1, 1]
 * (x/127.5 − 1, the usual diffusion pixel range).
 */
export function emojiBatch(ds: EmojiDataset, indices: readonly number[]): Tensor {
  const per = ds.size * ds.size * 3;
  const buf = new Uint8Array(indices.length * per);
  indices.forEach((i, j) => {
    if (!(i >= 0 && i < ds.items.length)) throw new Error(`emoji index ${i} is out of range (${ds.items.length} items)`);
    buf.set(ds.pixels.subarray(i * per, (i + 1) * per), j * per);
  });
  return uint8ToTensor(buf, indices.length, ds.size);
}

/** Uint8 HWC images [B, size, size, 3] → float [B, 3, size, size] in [−1, 1]. */
export function uint8ToTensor(pixels: Uint8Array, count: number, size: number): Tensor {
  return pixelsToTensor(pixels, count, size, size);
}
