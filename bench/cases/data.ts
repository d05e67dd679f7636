// Preference data throughput against the trainer it feeds: decoded, augmented pairs/s from a
// Pick-a-Pic-schema parquet file and from a w/ l/ folder (PreferenceLoader with worker threads),
// beside the Diffusion-DPO trainer's pairs/s on the default model, in the same run.
//
//   data: N pairs of real emoji (32×32 composites upscaled to 128×128 with bicubic, JPEG quality
//     90, about 4 kB each; in parquet as jpg_0/jpg_1 bytes with the rest of Pick-a-Pic's columns,
//     row groups of 64; in the folder as w/NNNN.jpg, l/NNNN.jpg and a .txt caption each). The loader
//     decodes, resizes to 32, random-crops, flips (jointly per pair) and scales to [−1, 1], in 2
//     worker threads, batches of 16 pairs. pairs/s = pairs after the first batch / time after it.
//   trainer: DpoTrainer (src/train) on the emoji-base architecture (TINY UNet at 32×32 + its 2-layer
//     CLIP text encoder, frozen), 8 pairs per step, full fine-tune with a frozen reference copy, β
//     5000, AdamW, prompt dropout 0.2; pairs/s from the trainer's own per-step metric (median after
//     warm-up), the better of the run's thread count and 1 thread.
// The ratio row is loader pairs/s ÷ trainer pairs/s; the issue asks for ≥ 10×. Both sides share the
// same 2 cores, so the loader measured here runs while the trainer is idle (it overlaps in training).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { parquetWriteFile } from "hyparquet-writer";
import type { BenchCase, BenchResult } from "../types.js";
import { FolderSource } from "../../src/data/folder.js";
import { PreferenceLoader } from "../../src/data/loader.js";
import { PickapicSource } from "../../src/data/pickapic.js";
import type { PreferenceSource } from "../../src/data/types.js";
import { emojiImage, loadEmojiDataset } from "../../src/datasets/emoji.js";
import { createEmojiModel } from "../../src/datasets/emojiModel.js";
import { NoiseSchedule } from "../../src/diffusion/index.js";
import { loadTrainConfig } from "../../src/config/train.js";
import { disposeTextToImageModel, encodePrompts } from "../../src/models/pipeline.js";
import { Generator, randn, setNumThreads } from "../../src/tensor/index.js";
import { DpoTrainer } from "../../src/train/trainer.js";
import { TensorPairSource } from "../../src/train/data.js";
import { median } from "./engine.js";

const JPEG_SIDE = 128;
const LOADER_BATCH = 16;
const WORKERS = 2;
const TRAIN_PAIRS = 8;

async function jpeg(pixels: Uint8Array): Promise<Uint8Array> {
  const b = await sharp(pixels, { raw: { width: 32, height: 32, channels: 3 } })
    .resize(JPEG_SIDE, JPEG_SIDE, { kernel: "cubic" }).jpeg({ quality: 90 }).toBuffer();
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Writes `n` emoji pairs as a Pick-a-Pic parquet file and as a w/ l/ folder; returns both paths. */
async function writeFixtures(dir: string, n: number): Promise<{ parquet: string; folder: string; bytes: number }> {
  const ds = await loadEmojiDataset({ split: "train" });
  const captions: string[] = [];
  const jpg0: Uint8Array[] = [];
  const jpg1: Uint8Array[] = [];
  let bytes = 0;
  const folder = join(dir, "folder");
  mkdirSync(join(folder, "w"), { recursive: true });
  mkdirSync(join(folder, "l"), { recursive: true });
  for (let i = 0; i < n; i++) {
    const a = (2 * i) % ds.items.length;
    const b = (2 * i + 1) % ds.items.length;
    const [ja, jb] = await Promise.all([jpeg(emojiImage(ds, a)), jpeg(emojiImage(ds, b))]);
    captions.push(ds.items[a]!.caption);
    jpg0.push(ja);
    jpg1.push(jb);
    bytes += ja.length + jb.length;
    const name = String(i).padStart(4, "0");
    writeFileSync(join(folder, "w", `${name}.jpg`), ja);
    writeFileSync(join(folder, "l", `${name}.jpg`), jb);
    writeFileSync(join(folder, "w", `${name}.txt`), ds.items[a]!.caption);
  }
  const parquet = join(dir, "train-00000.parquet");
  const str = (f: (i: number) => string) => Array.from({ length: n }, (_, i) => f(i));
  const i64 = (f: (i: number) => number) => BigInt64Array.from({ length: n }, (_, i) => BigInt(f(i)));
  parquetWriteFile({
    filename: parquet,
    rowGroupSize: 64,
    columnData: [
      { name: "caption", data: captions, type: "STRING" },
      { name: "jpg_0", data: jpg0, type: "BYTE_ARRAY" },
      { name: "jpg_1", data: jpg1, type: "BYTE_ARRAY" },
      { name: "label_0", data: Float64Array.from({ length: n }, (_, i) => (i % 2 === 0 ? 1 : 0)), type: "DOUBLE" },
      { name: "label_1", data: Float64Array.from({ length: n }, (_, i) => (i % 2 === 0 ? 0 : 1)), type: "DOUBLE" },
      { name: "best_image_uid", data: str((i) => `img-${2 * i + (i % 2)}`), type: "STRING" },
      { name: "image_0_uid", data: str((i) => `img-${2 * i}`), type: "STRING" },
      { name: "image_1_uid", data: str((i) => `img-${2 * i + 1}`), type: "STRING" },
      { name: "image_0_url", data: str(() => ""), type: "STRING" },
      { name: "image_1_url", data: str(() => ""), type: "STRING" },
      { name: "model_0", data: str(() => "emoji"), type: "STRING" },
      { name: "model_1", data: str(() => "emoji"), type: "STRING" },
      { name: "are_different", data: Array.from({ length: n }, () => true), type: "BOOLEAN" },
      { name: "has_label", data: Array.from({ length: n }, () => true), type: "BOOLEAN" },
      { name: "created_at", data: Array.from({ length: n }, () => new Date(0)), type: "TIMESTAMP" },
      { name: "ranking_id", data: i64((i) => i), type: "INT64" },
      { name: "user_id", data: i64(() => 0), type: "INT64" },
      { name: "num_example_per_prompt", data: i64(() => 1), type: "INT64" },
      { name: "__index_level_0__", data: i64((i) => i), type: "INT64" },
    ],
  });
  return { parquet, folder, bytes };
}

/** Pairs/s of one pass over a source, timed from the end of the first batch. */
async function loaderPairsPerSecond(source: PreferenceSource): Promise<number> {
  const loader = new PreferenceLoader(source, {
    batchSize: LOADER_BATCH, workers: WORKERS, prefetch: 4, seed: 0,
    augment: { resolution: 32, crop: "random", flip: true },
  });
  let t0 = 0;
  let pairs = 0;
  let first = true;
  for await (const b of loader.batches(1)) {
    if (first) {
      first = false;
      t0 = performance.now();
      continue;
    }
    pairs += b.prompts.length;
  }
  return pairs / ((performance.now() - t0) / 1000);
}

/** The DPO trainer's pairs/s on the emoji-base architecture (median over the measured steps). */
async function trainerPairsPerSecond(steps: number, warmup: number): Promise<{ pairsPerSec: number; params: number }> {
  const ds = await loadEmojiDataset({ split: "train" });
  const t2i = createEmojiModel(ds, 0);
  t2i.textEncoder.requiresGrad(false);
  const g = new Generator(1);
  const m = TRAIN_PAIRS * (steps + warmup + 2);
  const base = randn([m, 3, 32, 32], g).mul(0.5);
  const pairs = { prompts: ds.items.slice(0, m).map((i) => i.caption), chosen: base.add(0.1).clamp(-1, 1), rejected: base.sub(0.1).clamp(-1, 1) };
  const data = new TensorPairSource(pairs, TRAIN_PAIRS, 0);
  const out = mkdtempSync(join(tmpdir(), "data-bench-train-"));
  try {
    const config = loadTrainConfig({
      flags: {
        seed: 0, batchSize: TRAIN_PAIRS, maxSteps: warmup + steps + 1, beta: 5000, learningRate: 1e-5, scaleLr: false,
        warmupSteps: 0, lrSchedule: "constant", promptDropout: 0.2, checkpointEvery: 0, outputDir: out,
      },
    });
    const trainer = new DpoTrainer({
      config, model: t2i.unet, encodePrompts: (p: string[]) => encodePrompts(t2i, p), schedule: new NoiseSchedule(t2i.scheduler), data,
      stopAfterSteps: warmup + steps,
    });
    const res = await trainer.run();
    const rates = res.history.slice(warmup).map((h) => h.metrics.pairsPerSec as number);
    return { pairsPerSec: median(rates), params: t2i.unet.numParameters() };
  } finally {
    rmSync(out, { recursive: true, force: true });
    pairs.chosen.dispose();
    pairs.rejected.dispose();
    base.dispose();
    disposeTextToImageModel(t2i);
  }
}

export const dataBench: BenchCase = {
  name: "data",
  async run({ quick, threads }) {
    setNumThreads(threads);
    const n = quick ? 256 : 768;
    const dir = mkdtempSync(join(tmpdir(), "data-bench-"));
    try {
      const fx = await writeFixtures(dir, n);
      const parquetRates: number[] = [];
      const folderRates: number[] = [];
      for (let r = 0; r < (quick ? 1 : 2); r++) {
        parquetRates.push(await loaderPairsPerSecond(new PickapicSource(fx.parquet)));
        folderRates.push(await loaderPairsPerSecond(new FolderSource(fx.folder)));
      }
      const parquet = Math.max(...parquetRates);
      const folder = Math.max(...folderRates);
      // The trainer's best rate over `threads` and 1 thread: on a shared, oversubscribed machine
      // 2 OpenMP threads can be several times slower than 1, and the faster trainer is the
      // harder target for the loader.
      const rates: { threads: number; pairsPerSec: number; params: number }[] = [];
      for (const t of threads > 1 ? [threads, 1] : [threads]) {
        setNumThreads(t);
        rates.push({ threads: t, ...(await trainerPairsPerSecond(quick ? 3 : 6, 2)) });
      }
      setNumThreads(threads);
      const trainer = rates.reduce((a, b) => (b.pairsPerSec > a.pairsPerSec ? b : a));
      const avgKb = (fx.bytes / (2 * n) / 1024).toFixed(1);
      const results: BenchResult[] = [
        { name: "data: parquet → augmented pairs", unit: "pairs/s", ours: parquet, note: `${n} Pick-a-Pic-schema rows, ${JPEG_SIDE}² JPEG (${avgKb} kB) → 32² random crop + flip, ${WORKERS} workers, batch ${LOADER_BATCH}` },
        { name: "data: w/ l/ folder → augmented pairs", unit: "pairs/s", ours: folder, note: `${n} JPEG pairs with .txt captions, same transform` },
        { name: "data: DPO trainer (emoji-base)", unit: "pairs/s", ours: trainer.pairsPerSec, note: `DpoTrainer, ${TRAIN_PAIRS} pairs/step, UNet ${trainer.params} params + frozen reference, median step; best of ${rates.map((r) => `${r.pairsPerSec.toPrecision(3)} at ${r.threads} thread(s)`).join(", ")}` },
        { name: "data: parquet loader ÷ trainer", unit: "×", ours: parquet / trainer.pairsPerSec, note: "target ≥ 10×" },
        { name: "data: folder loader ÷ trainer", unit: "×", ours: folder / trainer.pairsPerSec, note: "target ≥ 10×" },
      ];
      return results;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
