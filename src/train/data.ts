// Where the trainer gets its batches: random access by global batch index, so a resumed run asks
// for exactly the batches the uninterrupted run would have seen (the data position is one integer
// in the checkpoint).
import { Rng, hashInts } from "../data/random.js";
import { cat, keep, tensor, type Tensor } from "../tensor/index.js";
import type { PairBatch } from "./dpo-step.js";

/** This process's part of a data-parallel run: rank r of worldSize reads its own shard. */
export interface DataShard {
  rank: number;
  worldSize: number;
  /**
   * Where this rank's pairs sit in the one-process batch of batchSize × worldSize pairs (so each
   * pair gets the same t, ε and dropout coin as there): "contiguous" (default) = rank r holds
   * positions [r·B, (r+1)·B); "interleaved" = its j-th pair is position j·worldSize + r (a loader
   * dealing every worldSize-th row to each rank).
   */
  layout?: "contiguous" | "interleaved";
}

export interface PairBatchSource {
  /** Pairs per batch (per process in a data-parallel run). */
  readonly batchSize: number;
  /**
   * The shard this source reads in a data-parallel run (absent: the whole data, one process).
   * The trainer checks it against its process group.
   */
  readonly shard?: DataShard;
  /**
   * The batch at global position `index` (0, 1, 2, … over the whole run, epochs included), the
   * same for the same index every time. The trainer disposes the returned pixels.
   */
  batch(index: number): PairBatch | Promise<PairBatch>;
  /**
   * Streaming sources (read in order only) save their own position in checkpoints: `state()` is
   * stored in trainer_state.json after each saved step and handed to `restore()` on resume.
   */
  state?(): unknown;
  restore?(state: unknown): void;
  /**
   * Every pair of the data once, in batches of up to batchSize (the last may be smaller), for a
   * one-off pass such as building the reference cache; the caller disposes the pixels.
   */
  everyPair?(): Iterable<PairBatch> | AsyncIterable<PairBatch>;
}

/** What LoaderBatchSource needs from src/data's PreferenceLoader. */
export interface SequentialPairLoader<S> {
  state(): S;
  restore(s: S): void;
  batches(epochs?: number): AsyncGenerator<LoaderBatch>;
}

/** A loader batch: prompts, [chosen…, rejected…] pixels and, optionally, each pair's augmentation geometry. */
export interface LoaderBatch {
  prompts: string[];
  pixels: Float32Array;
  shape: [number, number, number, number];
  geometry?: { originalSize: [number, number]; cropTopLeft: [number, number] }[];
}

/** A loader batch as the trainer's PairBatch: pixels on `device` and, with geometry, SDXL's micro-conditioning. */
export function loaderPairBatch(b: LoaderBatch, device = "cpu"): PairBatch {
  const out: PairBatch = { prompts: b.prompts, pixels: tensor(b.pixels, b.shape, { device }) };
  // the SDXL micro-conditioning of each pair (original size, crop; target = the training size)
  if (b.geometry !== undefined) {
    const target: [number, number] = [b.shape[2], b.shape[3]];
    out.micro = b.geometry.map((g) => ({ originalSize: g.originalSize, cropTopLeft: g.cropTopLeft, targetSize: target }));
  }
  return out;
}

/**
 * Adapts a streaming loader (src/data's PreferenceLoader: Float32Array batches, in order) to the
 * trainer. Batches must be asked for in order; the loader's own state travels in checkpoints.
 */
export class LoaderBatchSource<S> implements PairBatchSource {
  #iter: AsyncGenerator<LoaderBatch> | null = null;
  #next: number | null = null;

  constructor(readonly loader: SequentialPairLoader<S>, readonly batchSize: number, readonly device = "cpu") {}

  /**
   * The loader's rank/worldSize (src/data's PreferenceLoader keeps them in its state). Its ranks
   * take every worldSize-th row (a single file or folder: then W ranks × batch B/W see exactly the
   * one-process batches) or, over many shards, whole shards each (then the pairs differ from a
   * one-process run, as they do in any sharded reader).
   */
  get shard(): DataShard | undefined {
    const s = this.loader.state() as { rank?: unknown; worldSize?: unknown } | null;
    if (s === null || typeof s !== "object" || typeof s.rank !== "number" || typeof s.worldSize !== "number") return undefined;
    return { rank: s.rank, worldSize: s.worldSize, layout: "interleaved" };
  }

  async batch(index: number): Promise<PairBatch> {
    if (this.#next !== null && index !== this.#next) {
      throw new Error(`LoaderBatchSource reads in order: batch ${this.#next} is next, but batch ${index} was asked for`);
    }
    this.#iter ??= this.loader.batches();
    const r = await this.#iter.next();
    if (r.done === true) throw new Error(`the data loader ran out of batches at batch ${index}`);
    this.#next = index + 1;
    const b = r.value;
    if (b.prompts.length !== this.batchSize) {
      throw new Error(`the data loader yielded ${b.prompts.length} pairs, but the trainer expects batches of ${this.batchSize} (use dropLast)`);
    }
    return loaderPairBatch(b, this.device);
  }

  state(): S {
    return this.loader.state();
  }

  /** Ends the loader's iteration (its decoding threads stop, so the process can exit). */
  async close(): Promise<void> {
    const it = this.#iter;
    this.#iter = null;
    this.#next = null;
    await it?.return(undefined);
  }

  restore(state: unknown): void {
    if (this.#iter !== null) throw new Error("LoaderBatchSource.restore: call before the first batch");
    this.loader.restore(state as S);
  }
}

/**
 * Pairs held in memory ([M, C, H, W] chosen and rejected tensors): each epoch is a seeded
 * permutation, batches never straddle epochs (the last partial batch is dropped, as
 * `drop_last=True`).
 *
 * Data parallel (`shard`): the permutation is cut into global batches of batchSize × worldSize
 * pairs and rank r takes the r-th contiguous part of each, so W ranks with batch B/W see, step
 * for step, exactly the pairs (and in the same order) that one process with batch B sees.
 */
export class TensorPairSource implements PairBatchSource {
  readonly #chosen: Tensor;
  readonly #rejected: Tensor;
  readonly #prompts: string[];
  readonly #perms = new Map<number, number[]>();
  readonly batchesPerEpoch: number;

  readonly shard: DataShard | undefined;

  constructor(
    pairs: { prompts: string[]; chosen: Tensor; rejected: Tensor },
    readonly batchSize: number,
    readonly seed = 0,
    shard?: DataShard,
  ) {
    const m = pairs.prompts.length;
    const world = shard?.worldSize ?? 1;
    if (shard !== undefined && (!Number.isInteger(world) || world < 1 || !Number.isInteger(shard.rank) || shard.rank < 0 || shard.rank >= world)) {
      throw new Error(`TensorPairSource: shard rank ${shard.rank} of worldSize ${shard.worldSize} is invalid (rank must be in [0, worldSize))`);
    }
    this.shard = shard;
    if (pairs.chosen.shape[0] !== m || pairs.rejected.shape[0] !== m || pairs.chosen.shape.join(",") !== pairs.rejected.shape.join(",")) {
      throw new Error(
        `TensorPairSource: ${m} prompts need chosen and rejected images [${m}, C, H, W] of one shape; got [${pairs.chosen.shape.join(", ")}] and [${pairs.rejected.shape.join(", ")}]`,
      );
    }
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize * world > m) {
      throw new Error(
        world > 1
          ? `TensorPairSource: batch size ${batchSize} × ${world} processes must be at most ${m} (the number of pairs)`
          : `TensorPairSource: batch size ${batchSize} must be an integer in [1, ${m}] (the number of pairs)`,
      );
    }
    this.#chosen = keep(pairs.chosen.clone());
    this.#rejected = keep(pairs.rejected.clone());
    this.#prompts = [...pairs.prompts];
    this.batchesPerEpoch = Math.floor(m / (batchSize * world));
  }

  /** The order of pairs in epoch e. */
  permutation(epoch: number): number[] {
    let p = this.#perms.get(epoch);
    if (p === undefined) {
      p = new Rng(hashInts(this.seed, epoch)).shuffle(Array.from({ length: this.#prompts.length }, (_, i) => i));
      if (this.#perms.size > 4) this.#perms.clear();
      this.#perms.set(epoch, p);
    }
    return p;
  }

  batch(index: number): PairBatch {
    const epoch = Math.floor(index / this.batchesPerEpoch);
    const k = index % this.batchesPerEpoch;
    const global = this.batchSize * (this.shard?.worldSize ?? 1);
    const start = k * global + (this.shard?.rank ?? 0) * this.batchSize;
    return this.#pairs(this.permutation(epoch).slice(start, start + this.batchSize));
  }

  /** All pairs in index order (every rank gets all of them). */
  *everyPair(): Generator<PairBatch> {
    for (let i = 0; i < this.#prompts.length; i += this.batchSize) {
      yield this.#pairs(Array.from({ length: Math.min(this.batchSize, this.#prompts.length - i) }, (_, j) => i + j));
    }
  }

  #pairs(ids: number[]): PairBatch {
    const ix = tensor(new BigInt64Array(ids.map(BigInt)), [ids.length], { device: this.#chosen.device });
    const chosen = this.#chosen.indexSelect(0, ix);
    const rejected = this.#rejected.indexSelect(0, ix);
    const pixels = cat([chosen, rejected], 0);
    ix.dispose();
    chosen.dispose();
    rejected.dispose();
    return { prompts: ids.map((i) => this.#prompts[i]!), pixels };
  }

  dispose(): void {
    this.#chosen.dispose();
    this.#rejected.dispose();
  }
}
