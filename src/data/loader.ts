/**
 * PreferenceLoader: batches of training pixels from any preference source.
 *
 * - Order: deterministic for (seed, epoch). Units (parquet row groups, or chunks of an
 *   indexable source) are shuffled, then the rows inside each unit; with one unit (JSONL, a
 *   folder) this is a full shuffle of the data set.
 * - Data parallel: `rank`/`worldSize` give each rank a disjoint part. With at least `worldSize`
 *   units, ranks take every worldSize-th unit of the shuffled unit order (Pick-a-Pic shards and
 *   row groups split across ranks); otherwise every worldSize-th row. Ranks may then see
 *   slightly different numbers of pairs; a trainer needing equal steps should stop at the
 *   shortest.
 * - Augmentation: each pair's crop/flip comes from rngFor(seed, epoch, unit, row), so it does
 *   not depend on worker timing and a resumed run repeats it exactly.
 * - Read-ahead: pairs are decoded and augmented in `workers` worker threads (default 1; 0 =
 *   in the calling thread), up to `prefetch` batches ahead of the consumer.
 * - Resume: `state()` after a batch, `restore(state)` before iterating again.
 * - Bad rows: reader errors and decode errors throw a `DataError`; with `skipBad` they are
 *   counted in `stats.skipped` and the batch is filled with the next good pairs.
 *
 * Batches are plain arrays, `pixels` laid out [chosen_0..chosen_{N−1}, rejected_0..rejected_{N−1}],
 * each 3×res×res CHW in [−1, 1]; the trainer makes the tensor.
 */
import type { Worker } from "node:worker_threads";
import { handleBad } from "./errors.js";
import { tally } from "./dataset.js";
import type { AugmentOptions } from "./images.js";
import { runTask, resultError, type PrepareResult, type PrepareTask } from "./prepare.js";
import type { PairGeometry } from "./images.js";
import { hashInts, rngFor } from "./random.js";
import { startWorker } from "./threads.js";
import { emptyStats } from "./types.js";
import type { PairUnit, PreferencePair, PreferenceSource, ReadStats, RowResult } from "./types.js";
import { DataError } from "./errors.js";

export interface LoaderOptions {
  /** Pairs per batch (the batch has 2·batchSize images). */
  batchSize: number;
  augment: AugmentOptions;
  /** Seed of order and augmentation (default 0). */
  seed?: number;
  /** Shuffle units and rows each epoch (default true). */
  shuffle?: boolean;
  /** Count and skip bad rows instead of throwing (default false). */
  skipBad?: boolean;
  /** Drop the last incomplete batch of an epoch (default true, as the official script). */
  dropLast?: boolean;
  rank?: number;
  worldSize?: number;
  /** Decoding threads (default 1; 0 decodes in the calling thread). */
  workers?: number;
  /** Batches decoded ahead of the consumer (default 2). */
  prefetch?: number;
}

export interface PreferenceBatch {
  prompts: string[];
  ids: string[];
  /** [2N, 3, res, res] float32, chosen images first then rejected. */
  pixels: Float32Array;
  shape: [number, number, number, number];
  /** Where the pairs came from (file, row). */
  sources: { file: string; row: number }[];
  /** Per pair: the chosen image's original size and the crop (SDXL's micro-conditioning). */
  geometry: PairGeometry[];
  epoch: number;
}

/** Position of a loader: the next batch starts at item `position` of epoch `epoch`'s order. */
export interface LoaderState {
  seed: number;
  epoch: number;
  position: number;
  rank: number;
  worldSize: number;
}

interface Item {
  unit: number;
  row: number;
}

interface Pending {
  /** Order position after this item. */
  next: number;
  pair: PreferencePair;
  result: Promise<PrepareResult>;
}

class WorkerPool {
  private workers: Worker[] = [];
  private waiting = new Map<number, { resolve: (r: PrepareResult) => void; reject: (e: Error) => void }>();
  private next = 0;
  private failed: Error | null = null;

  constructor(n: number) {
    for (let i = 0; i < n; i++) {
      const w = startWorker(import.meta.url, "decodeWorker");
      w.on("message", (r: PrepareResult) => {
        const p = this.waiting.get(r.id);
        if (p) {
          this.waiting.delete(r.id);
          p.resolve(r);
        }
      });
      w.on("error", (e: Error) => this.fail(new Error(`image worker crashed: ${e.message}`)));
      this.workers.push(w);
    }
  }

  private fail(e: Error): void {
    this.failed = e;
    for (const p of this.waiting.values()) p.reject(e);
    this.waiting.clear();
  }

  run(t: PrepareTask): Promise<PrepareResult> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiting.set(t.id, { resolve, reject });
      const w = this.workers[this.next++ % this.workers.length]!;
      w.postMessage(t);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers = [];
  }
}

export class PreferenceLoader {
  readonly stats: ReadStats = emptyStats();
  private readonly o: Required<LoaderOptions>;
  private epoch = 0;
  private position = 0;
  private unitsCache: PairUnit[] | null = null;
  private taskId = 0;

  constructor(
    readonly source: PreferenceSource,
    opts: LoaderOptions,
  ) {
    const o: Required<LoaderOptions> = {
      seed: 0,
      shuffle: true,
      skipBad: false,
      dropLast: true,
      rank: 0,
      worldSize: 1,
      workers: 1,
      prefetch: 2,
      ...opts,
    };
    if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new Error(`PreferenceLoader: batchSize must be a positive integer, got ${o.batchSize}`);
    if (!Number.isInteger(o.worldSize) || o.worldSize < 1) throw new Error(`PreferenceLoader: worldSize must be a positive integer, got ${o.worldSize}`);
    if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= o.worldSize) throw new Error(`PreferenceLoader: rank must be in 0..${o.worldSize - 1}, got ${o.rank}`);
    if (!Number.isInteger(o.workers) || o.workers < 0) throw new Error(`PreferenceLoader: workers must be 0 or more, got ${o.workers}`);
    this.o = o;
  }

  state(): LoaderState {
    return { seed: this.o.seed, epoch: this.epoch, position: this.position, rank: this.o.rank, worldSize: this.o.worldSize };
  }

  /** Continue from a saved state (same seed, rank and world size required). */
  restore(s: LoaderState): void {
    if (s.seed !== this.o.seed || s.rank !== this.o.rank || s.worldSize !== this.o.worldSize) {
      throw new Error(
        `PreferenceLoader.restore: state was saved with seed ${s.seed}, rank ${s.rank}/${s.worldSize}; this loader has seed ${this.o.seed}, rank ${this.o.rank}/${this.o.worldSize}`,
      );
    }
    this.epoch = s.epoch;
    this.position = s.position;
  }

  private async units(): Promise<PairUnit[]> {
    this.unitsCache ??= await this.source.units();
    return this.unitsCache;
  }

  /** The order of items this rank visits in `epoch`. */
  async order(epoch: number): Promise<Item[]> {
    const units = await this.units();
    const { seed, shuffle, rank, worldSize } = this.o;
    const unitOrder = units.map((_, i) => i);
    if (shuffle) rngFor(seed, epoch, -1).shuffle(unitOrder);
    const byUnit = units.length >= worldSize && units.length > 1 && worldSize > 1;
    const mine = byUnit ? unitOrder.filter((_, i) => i % worldSize === rank) : unitOrder;
    const items: Item[] = [];
    for (const u of mine) {
      const rows = Array.from({ length: units[u]!.rows }, (_, i) => i);
      if (shuffle) rngFor(seed, epoch, u).shuffle(rows);
      for (const row of rows) items.push({ unit: u, row });
    }
    if (byUnit || worldSize === 1) return items;
    return items.filter((_, i) => i % worldSize === rank);
  }

  /** Batches of one epoch, starting at the restored position; advances `state()`. */
  async *epochBatches(sharedPool?: WorkerPool | null): AsyncGenerator<PreferenceBatch> {
    const epoch = this.epoch;
    const items = await this.order(epoch);
    const { batchSize, prefetch, augment, seed, skipBad } = this.o;
    const res = augment.resolution;
    const per = 3 * res * res;
    const pool = sharedPool !== undefined ? sharedPool : this.o.workers > 0 ? new WorkerPool(this.o.workers) : null;
    const unitRows = new Map<number, RowResult[]>();
    const pending: Pending[] = [];
    let pos = this.position;
    let yielded = 0;

    const rowAt = async (it: Item): Promise<RowResult> => {
      let rows = unitRows.get(it.unit);
      if (!rows) {
        // keep only the unit being read (order visits a unit's rows together)
        unitRows.clear();
        rows = await this.source.readUnit(it.unit);
        unitRows.set(it.unit, rows);
      }
      const r = rows[it.row];
      // readUnit may return fewer rows than the unit size (blank JSONL lines)
      return r ?? { kind: "filtered" };
    };
    // fill the read-ahead queue up to `prefetch` batches of pairs
    const fill = async (): Promise<void> => {
      while (pending.length < prefetch * batchSize && pos < items.length) {
        const it = items[pos]!;
        pos++;
        const pair = tally(await rowAt(it), this.stats, skipBad);
        if (!pair) continue;
        const task: PrepareTask = {
          id: this.taskId++,
          chosen: pair.chosen,
          rejected: pair.rejected,
          source: pair.source.file,
          row: pair.source.row,
          chosenField: pair.fields?.chosen ?? "chosen",
          rejectedField: pair.fields?.rejected ?? "rejected",
          seed: hashInts(seed, epoch, it.unit, it.row),
          augment,
        };
        pending.push({ next: pos, pair, result: pool ? pool.run(task) : runTask(task) });
      }
    };

    try {
      let batch: { pair: PreferencePair; pixels: Float32Array; geometry: PairGeometry }[] = [];
      let batchEnd = this.position;
      for (;;) {
        await fill();
        const head = pending.shift();
        if (!head) break;
        const r = await head.result;
        batchEnd = head.next;
        if (!r.ok) {
          const err = resultError(r);
          if (!(err instanceof DataError)) throw err;
          // a bad image: the pair was counted as read; move it from pairs to skipped
          this.stats.pairs--;
          handleBad(err, skipBad, this.stats);
          continue;
        }
        batch.push({ pair: head.pair, pixels: r.pixels, geometry: r.geometry });
        if (batch.length === batchSize) {
          this.position = batchEnd;
          yielded++;
          const b = this.assemble(batch, per, res, epoch);
          batch = [];
          yield b;
        }
      }
      if (batch.length > 0 && !this.o.dropLast) {
        yielded++;
        yield this.assemble(batch, per, res, epoch);
      }
      if (yielded === 0 && this.position === 0) {
        throw new Error(
          `${this.source.name}: epoch ${epoch} produced no batch of ${batchSize} pairs for rank ${this.o.rank}/${this.o.worldSize} (pairs ${this.stats.pairs}, ties dropped ${this.stats.tiesDropped}, filtered ${this.stats.filtered}, skipped ${Object.values(this.stats.skipped).reduce((a, b) => a + (b ?? 0), 0)})`,
        );
      }
      this.epoch = epoch + 1;
      this.position = 0;
    } finally {
      // let in-flight work settle before stopping the workers
      await Promise.allSettled(pending.map((p) => p.result));
      if (sharedPool === undefined) await pool?.close();
    }
  }

  /** Batches over `epochs` epochs (default: endless), continuing from `state()`. */
  async *batches(epochs = Infinity): AsyncGenerator<PreferenceBatch> {
    const last = this.epoch + epochs;
    // one pool of worker threads for all epochs of this iteration
    const pool = this.o.workers > 0 ? new WorkerPool(this.o.workers) : null;
    try {
      while (this.epoch < last) yield* this.epochBatches(pool);
    } finally {
      await pool?.close();
    }
  }

  private assemble(batch: { pair: PreferencePair; pixels: Float32Array; geometry: PairGeometry }[], per: number, res: number, epoch: number): PreferenceBatch {
    const n = batch.length;
    const pixels = new Float32Array(2 * n * per);
    batch.forEach((b, i) => {
      pixels.set(b.pixels.subarray(0, per), i * per);
      pixels.set(b.pixels.subarray(per, 2 * per), (n + i) * per);
    });
    return {
      prompts: batch.map((b) => b.pair.prompt),
      ids: batch.map((b) => b.pair.id),
      pixels,
      shape: [2 * n, 3, res, res],
      sources: batch.map((b) => ({ ...b.pair.source })),
      geometry: batch.map((b) => b.geometry),
      epoch,
    };
  }
}
