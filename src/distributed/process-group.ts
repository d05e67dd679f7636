// Data-parallel plumbing over libtorch's c10d: rendezvous from torchrun's environment variables,
// collectives on tensors, and gradient averaging. Gloo on CPU; NCCL where libtorch has CUDA.
import { native } from "../tensor/native.js";
import type { Tensor } from "../tensor/tensor.js";
import { setNumThreads, tensor } from "../tensor/ops.js";
import { DEFAULT_BUCKET_BYTES, GradientReducer, type ReducerOptions } from "./reducer.js";

export type Backend = "gloo" | "nccl";

/** Exit code a worker uses when a collective failed because of a peer, so the launcher can name the rank that died first. */
export const PEER_FAILURE_EXIT_CODE = 17;

/** A collective failed because another rank died or timed out. */
export class PeerFailureError extends Error {
  override name = "PeerFailureError";
}

function collective<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    // Gloo appends the shapes of every input tensor ("(inputs: [32, 3, 3, 3]:Float …)"): drop them
    if (/failed on rank \d+ of \d+/.test(msg)) throw new PeerFailureError(msg.replace(/\s*\(inputs: [^()]*\)/g, ""));
    throw err;
  }
}
export type ReduceOp = "sum" | "avg" | "max" | "min";

export interface DistributedEnv {
  masterAddr: string;
  masterPort: number;
  rank: number;
  worldSize: number;
  localRank: number;
}

/** Reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK (torchrun's names); null when WORLD_SIZE is unset or 1. */
export function distributedEnvFromProcess(env: NodeJS.ProcessEnv = process.env): DistributedEnv | null {
  const world = env.WORLD_SIZE === undefined ? 1 : Number(env.WORLD_SIZE);
  if (!Number.isInteger(world) || world < 1) throw new Error(`WORLD_SIZE must be a positive integer, got "${env.WORLD_SIZE}"`);
  if (world === 1) return null;
  const need = (name: string): string => {
    const v = env[name];
    if (v === undefined || v === "") throw new Error(`${name} is not set; a distributed run needs MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE`);
    return v;
  };
  const rank = Number(need("RANK"));
  const port = Number(need("MASTER_PORT"));
  if (!Number.isInteger(rank) || rank < 0 || rank >= world) throw new Error(`RANK must be an integer in [0, ${world}), got "${env.RANK}"`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`MASTER_PORT must be a port number, got "${env.MASTER_PORT}"`);
  return {
    masterAddr: need("MASTER_ADDR"),
    masterPort: port,
    rank,
    worldSize: world,
    localRank: env.LOCAL_RANK === undefined ? rank : Number(env.LOCAL_RANK),
  };
}

/** The exit code a worker should end with after `err`: PEER_FAILURE_EXIT_CODE when a peer caused it, else 1. */
export function workerExitCode(err: unknown): number {
  return err instanceof PeerFailureError ? PEER_FAILURE_EXIT_CODE : 1;
}

export interface JoinOptions {
  /** Default: DDPO_DIST_BACKEND, else "nccl" when `device` is a CUDA device, else "gloo". */
  backend?: Backend;
  /** The training device ("cpu", "cuda"): picks the backend when none is given. */
  device?: string;
  /**
   * Rendezvous timeout, and how long a collective waits for the slowest rank (so it must exceed
   * the longest rank-0-only pause: a checkpoint write or a validation grid). Default:
   * DDPO_DIST_TIMEOUT_SEC, else 30 min, as torch.distributed's.
   */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export class ProcessGroup {
  /** Where the group's own small tensors (metrics, gathered state) live: cpu for gloo, cuda:<localRank> for nccl. */
  readonly device: string;

  private constructor(readonly rank: number, readonly worldSize: number, readonly backend: Backend, readonly localRank: number) {
    this.device = backend === "nccl" ? `cuda:${localRank}` : "cpu";
  }

  /**
   * Joins the group; rank 0 hosts the TCP store. Fails with a clear error naming the address and
   * rank when the others do not arrive within timeoutMs (which also bounds every collective).
   */
  static init(env: DistributedEnv, backend: Backend = "gloo", timeoutMs = 60_000): ProcessGroup {
    native.initProcessGroup(backend, env.masterAddr, env.masterPort, env.rank, env.worldSize, timeoutMs);
    return new ProcessGroup(env.rank, env.worldSize, backend, env.localRank);
  }

  /**
   * The worker side of `launchLocal` (or of a multi-machine launch with torchrun's variables):
   * null when WORLD_SIZE is unset or 1; otherwise applies DDPO_THREADS (threads per worker) and
   * joins the group.
   */
  static fromEnvironment(opts: JoinOptions = {}): ProcessGroup | null {
    const envVars = opts.env ?? process.env;
    const env = distributedEnvFromProcess(envVars);
    if (env === null) return null;
    const threads = envVars.DDPO_THREADS;
    if (threads !== undefined && threads !== "") setNumThreads(Number(threads));
    const named = envVars.DDPO_DIST_BACKEND;
    if (named !== undefined && named !== "gloo" && named !== "nccl") throw new Error(`DDPO_DIST_BACKEND must be gloo or nccl, got "${named}"`);
    const backend = opts.backend ?? (named as Backend | undefined) ?? (opts.device?.startsWith("cuda") ? "nccl" : "gloo");
    let timeoutMs = opts.timeoutMs ?? 30 * 60_000;
    const sec = envVars.DDPO_DIST_TIMEOUT_SEC;
    if (opts.timeoutMs === undefined && sec !== undefined && sec !== "") {
      if (!(Number(sec) > 0)) throw new Error(`DDPO_DIST_TIMEOUT_SEC must be a positive number of seconds, got "${sec}"`);
      timeoutMs = Number(sec) * 1000;
    }
    return ProcessGroup.init(env, backend, timeoutMs);
  }

  /**
   * The device this rank trains on: "cuda" alone becomes cuda:LOCAL_RANK (one GPU per process,
   * as with torchrun); anything else is returned as given.
   */
  trainingDevice(device: string): string {
    return device === "cuda" ? `cuda:${this.localRank}` : device;
  }

  get isMain(): boolean {
    return this.rank === 0;
  }

  /** In place on every tensor. */
  allReduce(tensors: Tensor[], op: ReduceOp = "sum"): void {
    collective(() => native.allReduce(tensors.map((t) => t.handle), op));
  }

  /** Copies root's values into every rank's tensors, in place. */
  broadcast(tensors: Tensor[], root = 0): void {
    collective(() => native.broadcast(tensors.map((t) => t.handle), root));
  }

  barrier(): void {
    collective(() => native.barrier());
  }

  /**
   * Averages gradients across ranks in buckets (25 MB by default, DDP's default) after backward
   * has finished (no overlap; createReducer overlaps); returns the bucket count.
   */
  averageGradients(params: Tensor[], bucketBytes = DEFAULT_BUCKET_BYTES): number {
    return collective(() => native.allReduceGradients(params.map((p) => p.handle), bucketBytes));
  }

  /**
   * A reducer that all-reduces the gradients of `params` (the trainable ones, in module order)
   * in buckets during backward, from hooks on their gradient accumulators (DDP's overlap); see
   * reducer.ts. Dispose it to remove the hooks.
   */
  createReducer(params: Tensor[], opts: ReducerOptions = {}): GradientReducer {
    return new GradientReducer(params, opts, collective);
  }

  /** Reduces plain numbers across ranks in float64 (e.g. step metrics: "avg"); every rank gets the result. */
  allReduceNumbers(values: number[], op: ReduceOp = "avg"): number[] {
    const t = tensor(new Float64Array(values), [values.length], { dtype: "f64", device: this.device });
    try {
      this.allReduce([t], op);
      return Array.from(t.toFloat64Array());
    } finally {
      t.dispose();
    }
  }

  /** Every rank's JSON value, in rank order, on every rank (small state such as per-rank data positions). */
  allGatherJson<T>(value: T): T[] {
    const bytes = Buffer.from(JSON.stringify(value) ?? "null", "utf8");
    const lengths = new Array<number>(this.worldSize).fill(0);
    lengths[this.rank] = bytes.length;
    const all = this.allReduceNumbers(lengths, "sum");
    const width = Math.max(1, ...all);
    const slots = new Float32Array(this.worldSize * width);
    slots.set(bytes, this.rank * width);
    const t = tensor(slots, [this.worldSize, width], { device: this.device });
    try {
      this.allReduce([t], "sum");
      const summed = t.toFloat32Array();
      return all.map((len, r) => {
        const part = Buffer.from(Uint8Array.from(summed.subarray(r * width, r * width + len)));
        return JSON.parse(part.toString("utf8")) as T;
      });
    } finally {
      t.dispose();
    }
  }

  destroy(): void {
    native.destroyProcessGroup();
  }
}
