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
