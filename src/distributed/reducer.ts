// Gradient averaging overlapped with backward, as torch's DistributedDataParallel does it: the
// native reducer (native/distributed.cc) hooks every trainable parameter's gradient accumulator,
// groups the gradients into buckets in reverse parameter order (the order backward produces
// them) and starts a bucket's async all-reduce as soon as its last gradient is accumulated, so
// the communication runs on Gloo's threads while backward computes the earlier layers.
//
//   const reducer = pg.createReducer(params);
//   for each micro-batch k: if (k === last) reducer.arm(); loss.backward();   // no_sync before the last
//   reducer.finish();   // waits, averages over the world size, writes .grad; then clip and step
//   reducer.dispose();  // removes the hooks
import { native } from "../tensor/native.js";
import type { Tensor } from "../tensor/tensor.js";

/** DDP's bucket_cap_mb default: 25 MB per bucket. */
export const DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024;
/** DDP's first bucket (1 MB): the first all-reduce leaves early in backward. */
export const DEFAULT_FIRST_BUCKET_BYTES = 1024 * 1024;

export interface ReducerOptions {
  bucketBytes?: number;
  firstBucketBytes?: number;
}

export interface ReduceStats {
  buckets: number;
  /** Buckets whose all-reduce a gradient hook started during backward (the overlapped ones). */
  launchedInBackward: number;
  /** Parameters that received no gradient in the armed backward (their current .grad, or zeros, was reduced). */
  unready: number;
  /** Time finish() waited for the all-reduces still in flight. */
  waitMs: number;
}

export class GradientReducer {
  #id: number | null;
  #armed = false;

  /** Use ProcessGroup.createReducer. `wrap` maps native failures (peer deaths) to PeerFailureError. */
  constructor(params: Tensor[], opts: ReducerOptions, private readonly wrap: <T>(fn: () => T) => T) {
    const bucketBytes = opts.bucketBytes ?? DEFAULT_BUCKET_BYTES;
    const firstBucketBytes = opts.firstBucketBytes ?? Math.min(DEFAULT_FIRST_BUCKET_BYTES, bucketBytes);
    if (!(bucketBytes > 0) || !(firstBucketBytes > 0)) throw new Error(`bucket sizes must be positive byte counts, got ${bucketBytes} and ${firstBucketBytes}`);
    this.#id = native.createReducer(params.map((p) => p.handle), bucketBytes, firstBucketBytes);
  }

  #live(): number {
    if (this.#id === null) throw new Error("the gradient reducer was disposed");
    return this.#id;
  }

  /** Bucket layout in launch order (the last parameters first). */
  get buckets(): { params: number; bytes: number }[] {
    return native.reducerInfo(this.#live()).buckets;
  }

  /** The next backward's gradients are all-reduced as they become ready (call before the last micro-batch's backward only). */
  arm(): void {
    native.reducerArm(this.#live());
    this.#armed = true;
  }

  get armed(): boolean {
    return this.#armed;
  }

  /** Launches what is left, waits for every bucket and writes the average over ranks into each parameter's .grad. */
  finish(): ReduceStats {
    const id = this.#live();
    this.#armed = false;
    return this.wrap(() => native.reducerFinish(id));
  }

  /** Removes the hooks; safe to call twice. */
  dispose(): void {
    if (this.#id === null) return;
    native.reducerDispose(this.#id);
    this.#id = null;
    this.#armed = false;
  }
}
