// Bounded fuzzing of every reader: random byte flips and truncations of a Pick-a-Pic shard, a JSONL
// file (and its images), a w/ l/ folder with non-images, and a SQLite store. Every case must end
// in either a named error (an Error whose message names the file it came from) or a normal end
// with counted skips — never a crash (an error that names nothing: TypeError, RangeError …),
// never a hang (each case has a time limit). Both strict and --skip-bad are tried, and every pair
// that comes out is decoded as the loader would (the images must be real images).
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, cpSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { openPreferenceData, type DataFormat } from "../../src/data/open.js";
import { decodeImage } from "../../src/data/images.js";
import { PreferenceStore } from "../../src/data/store.js";
import { jpeg, png, tempDir, writePickapic } from "./_fixtures.js";

/** mulberry32: a small seeded generator, so every run tries the same cases. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A copy of `bytes` with k random bytes replaced, or cut at a random length. */
function mutate(bytes: Uint8Array, r: () => number, kind: "flip" | "truncate"): Uint8Array {
  if (kind === "truncate") return bytes.slice(0, Math.floor(r() * bytes.length));
  const out = bytes.slice();
  const k = 1 + Math.floor(r() * 8);
  for (let i = 0; i < k; i++) out[Math.floor(r() * out.length)] = Math.floor(r() * 256);
  return out;
}

type Outcome = "named-error" | "completed" | "crash" | "hang";
const CASE_LIMIT_MS = 15_000;

/** Reads everything (pairs + decoded images); classifies how it ended. */
async function runCase(spec: string, format: DataFormat, skipBad: boolean, names: string[]): Promise<{ outcome: Outcome; detail: string }> {
  const work = (async (): Promise<{ outcome: Outcome; detail: string }> => {
    let data;
    try {
      data = openPreferenceData(spec, { format, skipBad, checkImages: true });
      let n = 0;
      for await (const pair of data.pairs()) {
        for (const image of [pair.chosen, pair.rejected]) await decodeImage(image, { source: pair.source.file, row: pair.source.row, field: "image" });
        if (++n > 10_000) return { outcome: "hang", detail: "more pairs than the input holds" };
      }
      return { outcome: "completed", detail: `${n} pairs, skipped ${JSON.stringify(data.stats.skipped)}` };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const named = err instanceof Error && names.some((name) => message.includes(name));
      return { outcome: named ? "named-error" : "crash", detail: `${err instanceof Error ? err.name : typeof err}: ${message}` };
    } finally {
      await data?.close().catch(() => undefined);
    }
  })();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ outcome: Outcome; detail: string }>((resolve) => {
    timer = setTimeout(() => resolve({ outcome: "hang", detail: `no end within ${CASE_LIMIT_MS} ms` }), CASE_LIMIT_MS);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface Tally { cases: number; namedErrors: number; completed: number; crashes: string[]; hangs: string[] }

async function fuzz(
  label: string, cases: number, seed: number,
  make: (r: () => number, i: number) => Promise<{ spec: string; format: DataFormat; names: string[] }>,
): Promise<Tally> {
  const r = rng(seed);
  const t: Tally = { cases: 0, namedErrors: 0, completed: 0, crashes: [], hangs: [] };
  for (let i = 0; i < cases; i++) {
    const c = await make(r, i);
    for (const skipBad of [false, true]) {
      const { outcome, detail } = await runCase(c.spec, c.format, skipBad, c.names);
      t.cases++;
      if (outcome === "named-error") t.namedErrors++;
      else if (outcome === "completed") t.completed++;
      else (outcome === "crash" ? t.crashes : t.hangs).push(`${label} case ${i} skipBad=${skipBad}: ${detail}`);
    }
  }
  return t;
}

function report(label: string, t: Tally): void {
  process.stderr.write(`# fuzz ${label}: ${t.cases} cases, ${t.namedErrors} named errors, ${t.completed} completed, ${t.crashes.length} crashes, ${t.hangs.length} hangs\n`);
  assert.deepEqual(t.crashes, [], `${label}: every error names its file`);
  assert.deepEqual(t.hangs, [], `${label}: no case hangs`);
  assert.ok(t.namedErrors > 0, `${label}: the mutations do reach the error paths`);
}

const CASES = 100; // per format, each run strict and with skipBad

test("fuzz: Pick-a-Pic parquet shard (byte flips and truncations)", async () => {
  const dir = tempDir("dpo-fuzz-pq-");
  const clean = join(dir, "clean.parquet");
  const rows = [];
  for (let i = 0; i < 6; i++) {
    rows.push({ caption: `a caption ${i}`, jpg_0: await jpeg(8, 8, [i * 40, 10, 10]), jpg_1: await png(8, 8, [10, i * 40, 10]), label_0: i % 3 === 0 ? 0.5 : i % 2, label_1: i % 3 === 0 ? 0.5 : 1 - (i % 2) });
  }
  writePickapic(clean, rows, { rowGroupSize: 2 });
  const bytes = new Uint8Array(readFileSync(clean));
  const t = await fuzz("parquet", CASES, 1, async (r, i) => {
    const file = join(dir, `case-${i}.parquet`);
    writeFileSync(file, mutate(bytes, r, i % 3 === 0 ? "truncate" : "flip"));
    return { spec: file, format: "pickapic", names: [basename(file)] };
  });
  report("parquet", t);
});

test("fuzz: JSONL file and the images it points to", async () => {
  const dir = tempDir("dpo-fuzz-jsonl-");
  const images: string[] = [];
  for (let i = 0; i < 8; i++) {
    const path = join(dir, `img-${i}.${i % 2 ? "png" : "jpg"}`);
    writeFileSync(path, i % 2 ? await png(8, 8, [i * 30, 0, 0]) : await jpeg(8, 8, [0, i * 30, 0]));
    images.push(path);
  }
  const lines = [0, 1, 2, 3].map((k) => JSON.stringify(k % 2
    ? { prompt: `p${k}`, chosen: images[2 * k]!, rejected: images[2 * k + 1]! }
    : { prompt: `p${k}`, image_0: images[2 * k]!, image_1: images[2 * k + 1]!, label_0: 1, label_1: 0 }));
  const text = new TextEncoder().encode(`${lines.join("\n")}\n`);
  const t = await fuzz("jsonl", CASES, 2, async (r, i) => {
    const caseDir = join(dir, `case-${i}`);
    mkdirSync(caseDir);
    const file = join(caseDir, "pairs.jsonl");
    // every third case corrupts one of the images instead of the JSONL text
    if (i % 3 === 2) {
      const victim = images[Math.floor(r() * images.length)]!;
      const copy = join(caseDir, basename(victim));
      writeFileSync(copy, mutate(new Uint8Array(readFileSync(victim)), r, r() < 0.5 ? "flip" : "truncate"));
      writeFileSync(file, new TextDecoder().decode(text).split(victim).join(copy));
      return { spec: file, format: "jsonl", names: [basename(file), basename(copy)] };
    }
    writeFileSync(file, mutate(text, r, i % 3 === 0 ? "truncate" : "flip"));
    return { spec: file, format: "jsonl", names: [basename(file), "img-"] };
  });
  report("jsonl", t);
});

test("fuzz: a w/ l/ folder with corrupted images, non-images and stray files", async () => {
  const dir = tempDir("dpo-fuzz-folder-");
  const clean = join(dir, "clean");
  for (const side of ["w", "l"]) mkdirSync(join(clean, side), { recursive: true });
  for (let i = 0; i < 4; i++) {
    writeFileSync(join(clean, "w", `${i}.png`), await png(8, 8, [200, i * 40, 0]));
    writeFileSync(join(clean, "l", `${i}.png`), await png(8, 8, [20, i * 40, 0]));
    writeFileSync(join(clean, "w", `${i}.txt`), `caption ${i}`);
  }
  const t = await fuzz("folder", CASES, 3, async (r, i) => {
    const root = join(dir, `case-${i}`);
    cpSync(clean, root, { recursive: true });
    const side = r() < 0.5 ? "w" : "l";
    const files = readdirSync(join(root, side)).filter((f) => f.endsWith(".png"));
    const victim = join(root, side, files[Math.floor(r() * files.length)]!);
    const roll = r();
    if (roll < 0.4) writeFileSync(victim, mutate(new Uint8Array(readFileSync(victim)), r, "flip"));
    else if (roll < 0.7) writeFileSync(victim, mutate(new Uint8Array(readFileSync(victim)), r, "truncate"));
    else if (roll < 0.85) writeFileSync(victim, "this is not an image\n"); // a non-image with an image name
    else copyFileSync(join(root, "w", "0.txt"), join(root, side, "notes.png"));
    return { spec: root, format: "folder", names: [root] };
  });
  report("folder", t);
});

test("fuzz: a corrupted SQLite preference store", async () => {
  const dir = tempDir("dpo-fuzz-db-");
  const clean = join(dir, "clean.sqlite");
  const store = new PreferenceStore(clean);
  for (let p = 0; p < 4; p++) {
    const a = store.addImage({ prompt: `prompt ${p}`, data: await png(8, 8, [p * 40, 0, 0]), format: "png", model: "tiny", seed: p });
    const b = store.addImage({ prompt: `prompt ${p}`, data: await jpeg(8, 8, [0, p * 40, 0]), format: "jpg", model: "tiny", seed: 100 + p });
    store.vote(store.addPair(a, b), "rater", p % 2 ? "a" : "b");
  }
  store.close(); // checkpoints the WAL into the main file
  const bytes = new Uint8Array(readFileSync(clean));
  const t = await fuzz("sqlite", CASES, 4, async (r, i) => {
    const file = join(dir, `case-${i}.sqlite`);
    writeFileSync(file, mutate(bytes, r, i % 3 === 0 ? "truncate" : "flip"));
    return { spec: file, format: "sqlite", names: [basename(file)] };
  });
  report("sqlite", t);
});
