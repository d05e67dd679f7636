// Where the trainer gets its batches: random access by global batch index, so a resumed run asks
// for exactly the batches the uninterrupted run would have seen (the data position is one integer
// in the checkpoint).
import { Rng, hashInts } from "../data/random.js";
import { cat, keep, tensor, type Tensor } from "../tensor/index.js";
import type { PairBatch } from "./dpo-step.js";

export interface PairBatchSource {
  /** Pairs per batch. */
  readonly batchSize: number;
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
}

/** What LoaderBatchSource needs from src/data's PreferenceLoader. */
export interface SequentialPairLoader<S> {
  state(): S;
  restore(s: S): void;
  batches(epochs?: number): AsyncGenerator<{ prompts: string[]; pixels: Float32Array; shape: [number, number, number, number] }>;
}

/**
 * Adapts a streaming loader (src/data's PreferenceLoader: Float32Array batches, in order) to the
 * trainer. Batches must be asked for in order; the loader's own state travels in checkpoints.
 */
export class LoaderBatchSource<S> implements PairBatchSource {
  #iter: AsyncGenerator<{ prompts: string[]; pixels: Float32Array; shape: [number, number, number, number] }> | null = null;
  #next: number | null = null;

  constructor(readonly loader: SequentialPairLoader<S>, readonly batchSize: number, readonly device = "cpu") {}

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
    return { prompts: b.prompts, pixels: tensor(b.pixels, b.shape, { device: this.device }) };
  }

  state(): S {
    return this.loader.state();
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
 */
export class TensorPairSource implements PairBatchSource {
  readonly #chosen: Tensor;
  readonly #rejected: Tensor;
  readonly #prompts: string[];
  readonly #perms = new Map<number, number[]>();
  readonly batchesPerEpoch: number;

  constructor(pairs: { prompts: string[]; chosen: Tensor; rejected: Tensor }, readonly batchSize: number, readonly seed = 0) {
    const m = pairs.prompts.length;
    if (pairs.chosen.shape[0] !== m || pairs.rejected.shape[0] !== m || pairs.chosen.shape.join(",") !== pairs.rejected.shape.join(",")) {
      throw new Error(
        `TensorPairSource: ${m} prompts need chosen and rejected images [${m}, C, H, W] of one shape; got [${pairs.chosen.shape.join(", ")}] and [${pairs.rejected.shape.join(", ")}]`,
      );
    }
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > m) {
      throw new Error(`TensorPairSource: batch size ${batchSize} must be an integer in [1, ${m}] (the number of pairs)`);
    }
    this.#chosen = keep(pairs.chosen.clone());
    this.#rejected = keep(pairs.rejected.clone());
    this.#prompts = [...pairs.prompts];
    this.batchesPerEpoch = Math.floor(m / batchSize);
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
    const ids = this.permutation(epoch).slice(k * this.batchSize, (k + 1) * this.batchSize);
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
