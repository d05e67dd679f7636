// Free functions: tensor creation, random numbers, multi-input ops and neural-network ops.
import { native } from "./native.js";
import { dtypeFromCode, SCALAR_TYPE, Tensor, wrap, type DType, type Device } from "./tensor.js";

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
}

let defaultDevice: Device = "cpu";
/** The device that creation functions use when none is given. */
export function setDefaultDevice(device: Device): void {
  defaultDevice = device;
}
export function getDefaultDevice(): Device {
  return defaultDevice;
}

function dtypeOf(opts?: TensorOptions, fallback: DType = "f32"): number {
  return SCALAR_TYPE[opts?.dtype ?? fallback];
}
function deviceOf(opts?: TensorOptions): string {
  return opts?.device ?? defaultDevice;
}

function checkShape(shape: number[], what: string): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`${what}: shape [${shape.join(", ")}] must hold non-negative integers`);
  }
}

/**
 * A tensor from numbers or a typed array. The dtype defaults from the array type (Float32Array →
 * f32, Float64Array → f64, Int32Array → i32, BigInt64Array → i64, Uint8Array → u8; plain numbers →
 * f32); values are converted when another dtype is asked for.
 */
export function tensor(
  data: number[] | ArrayBufferView,
  shape?: number[],
  opts?: TensorOptions,
): Tensor {
  let view: ArrayBufferView;
  let sourceType: DType;
  if (Array.isArray(data)) {
    view = new Float32Array(data);
    sourceType = "f32";
    if (opts?.dtype === "f64") {
      view = new Float64Array(data);
      sourceType = "f64";
    }
  } else {
    view = data;
    if (data instanceof Float32Array) sourceType = "f32";
    else if (data instanceof Float64Array) sourceType = "f64";
    else if (data instanceof Int32Array) sourceType = "i32";
    else if (data instanceof BigInt64Array) sourceType = "i64";
    else if (data instanceof Int16Array) sourceType = "i16";
    else if (data instanceof Int8Array) sourceType = "i8";
    else if (data instanceof Uint8Array || data instanceof Uint8ClampedArray) sourceType = "u8";
    else if (data instanceof Uint16Array) {
      if (opts?.dtype !== "f16" && opts?.dtype !== "bf16") {
        throw new Error("tensor(): a Uint16Array holds raw f16/bf16 bits; pass { dtype: 'f16' } or { dtype: 'bf16' }");
      }
      sourceType = opts.dtype;
    } else throw new Error("tensor(): unsupported array type");
  }
  const count = view.byteLength / (view as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
  const s = shape ?? [count];
  checkShape(s, "tensor()");
  const expected = s.reduce((a, b) => a * b, 1);
  if (expected !== count) {
    throw new Error(`tensor(): ${count} values do not fill shape [${s.join(", ")}] (${expected} needed)`);
  }
  let t = wrap(native.fromBytes(view, s, SCALAR_TYPE[sourceType]));
  const wanted = opts?.dtype ?? sourceType;
  if (wanted !== sourceType) {
    const converted = t.to(wanted);
    t.dispose();
    t = converted;
  }
  const device = deviceOf(opts);
  if (device !== "cpu") {
    const moved = t.toDevice(device);
    t.dispose();
    t = moved;
  }
  return t;
}

/** A tensor from raw little-endian bytes of the given dtype (safetensors loading). */
export function fromBytes(bytes: Uint8Array, shape: number[], dtype: DType): Tensor {
  checkShape(shape, "fromBytes()");
  return wrap(native.fromBytes(bytes, shape, SCALAR_TYPE[dtype]));
}

/** The raw little-endian bytes of a tensor (contiguous copy on the CPU). */
export function toBytes(t: Tensor): Uint8Array {
  return new Uint8Array(native.toBytes(t.handle));
}

export function scalar(value: number, opts?: TensorOptions): Tensor {
  return wrap(native.full([], value, dtypeOf(opts), deviceOf(opts)));
}
export function full(shape: number[], value: number, opts?: TensorOptions): Tensor {
  checkShape(shape, "full()");
  return wrap(native.full(shape, value, dtypeOf(opts), deviceOf(opts)));
}
export function zeros(shape: number[], opts?: TensorOptions): Tensor {
  return full(shape, 0, opts);
}
export function ones(shape: number[], opts?: TensorOptions): Tensor {
  return full(shape, 1, opts);
}
export function zerosLike(t: Tensor): Tensor {
  return wrap(native.full(t.shape, 0, SCALAR_TYPE[t.dtype], t.device));
}
export function onesLike(t: Tensor): Tensor {
  return wrap(native.full(t.shape, 1, SCALAR_TYPE[t.dtype], t.device));
}
export function arange(start: number, end?: number, step = 1, opts?: TensorOptions): Tensor {
  const [s, e] = end === undefined ? [0, start] : [start, end];
  return wrap(native.arange(s, e, step, dtypeOf(opts, "i64"), deviceOf(opts)));
}
export function linspace(start: number, end: number, steps: number, opts?: TensorOptions): Tensor {
  return wrap(native.linspace(start, end, steps, dtypeOf(opts), deviceOf(opts)));
}

// ---- random numbers ------------------------------------------------------------------------

/**
 * A seeded random-number generator (libtorch's CPU Philox-free mt19937 generator, the one
 * `torch.Generator().manual_seed(s)` makes), so sequences match PyTorch's for the same seed.
 * Numbers are always drawn on the CPU and then moved, so a seed means the same on every device.
 */
// Native generators are freed when their JS object is collected, or at once by dispose().
const generatorRegistry = new FinalizationRegistry<number>((handle) => native.generatorFree(handle));

export class Generator {
  #handle: number;
  constructor(seed = 0) {
    this.#handle = native.generatorNew(seed);
    generatorRegistry.register(this, this.#handle, this);
  }
  get handle(): number {
    if (this.#handle < 0) throw new Error("this Generator was disposed");
    return this.#handle;
  }
  /** Frees the native generator now (otherwise it is freed when this object is garbage-collected). */
  dispose(): void {
    if (this.#handle < 0) return;
    generatorRegistry.unregister(this);
    native.generatorFree(this.#handle);
    this.#handle = -1;
  }
  manualSeed(seed: number): this {
    native.generatorSeed(this.handle, seed);
    return this;
  }
  getState(): Uint8Array {
    return new Uint8Array(native.generatorGetState(this.handle));
  }
  setState(state: Uint8Array): this {
    const copy = state.slice().buffer;
    native.generatorSetState(this.handle, copy);
    return this;
  }
}

export function randn(shape: number[], gen: Generator, opts?: TensorOptions): Tensor {
  checkShape(shape, "randn()");
  return wrap(native.randn(shape, gen.handle, dtypeOf(opts), deviceOf(opts)));
}
export function rand(shape: number[], gen: Generator, opts?: TensorOptions): Tensor {
  checkShape(shape, "rand()");
  return wrap(native.rand(shape, gen.handle, dtypeOf(opts), deviceOf(opts)));
}
/** Integers in [low, high) as i64. */
export function randint(low: number, high: number, shape: number[], gen: Generator, opts?: TensorOptions): Tensor {
  checkShape(shape, "randint()");
  return wrap(native.randint(low, high, shape, gen.handle, deviceOf(opts)));
}
export function randperm(n: number, gen: Generator): Tensor {
  return wrap(native.randperm(n, gen.handle));
}
export function dropout(x: Tensor, p: number, gen: Generator, training = true): Tensor {
  if (p < 0 || p >= 1) throw new Error(`dropout probability must be in [0, 1), got ${p}`);
  if (!training || p === 0) return x;
  return wrap(native.dropout(x.handle, p, gen.handle));
}

// ---- multi-input ops -----------------------------------------------------------------------

export function cat(ts: Tensor[], dim = 0): Tensor {
  if (ts.length === 0) throw new Error("cat(): needs at least one tensor");
  return wrap(native.cat(ts.map((t) => t.handle), dim));
}
export function stack(ts: Tensor[], dim = 0): Tensor {
  if (ts.length === 0) throw new Error("stack(): needs at least one tensor");
  return wrap(native.stack(ts.map((t) => t.handle), dim));
}
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  return wrap(native.where(cond.handle, a.handle, b.handle));
}
export function matmul(a: Tensor, b: Tensor): Tensor {
  return wrap(native.matmul(a.handle, b.handle));
}
export function triu(x: Tensor, diagonal = 0): Tensor {
  return wrap(native.triu(x.handle, diagonal));
}

// ---- neural-network ops --------------------------------------------------------------------

/** x·wᵀ + b, as torch.nn.functional.linear. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return wrap(native.linear(x.handle, weight.handle, bias ? bias.handle : -1));
}

export interface Conv2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
}
const pair = (v: number | [number, number] | undefined, d: number): number[] =>
  v === undefined ? [d, d] : typeof v === "number" ? [v, v] : [v[0], v[1]];

export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  return wrap(
    native.conv2d(
      x.handle, weight.handle, bias ? bias.handle : -1,
      pair(opts.stride, 1), pair(opts.padding, 0), pair(opts.dilation, 1), opts.groups ?? 1,
    ),
  );
}

export function convTranspose2d(
  x: Tensor, weight: Tensor, bias?: Tensor | null,
  opts: Conv2dOptions & { outputPadding?: number | [number, number] } = {},
): Tensor {
  return wrap(
    native.convTranspose2d(
      x.handle, weight.handle, bias ? bias.handle : -1,
      pair(opts.stride, 1), pair(opts.padding, 0), pair(opts.outputPadding, 0), opts.groups ?? 1,
      pair(opts.dilation, 1),
    ),
  );
}

export function groupNorm(x: Tensor, groups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return wrap(native.groupNorm(x.handle, groups, weight ? weight.handle : -1, bias ? bias.handle : -1, eps));
}

export function layerNorm(x: Tensor, normalizedShape: number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return wrap(native.layerNorm(x.handle, normalizedShape, weight ? weight.handle : -1, bias ? bias.handle : -1, eps));
}

export function softmax(x: Tensor, dim: number): Tensor {
  return wrap(native.softmax(x.handle, dim));
}
export function logSoftmax(x: Tensor, dim: number): Tensor {
  return wrap(native.logSoftmax(x.handle, dim));
}

/** Rows of `weight` picked by integer `ids`. */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  return wrap(native.embedding(weight.handle, ids.handle));
}

/** Nearest-neighbour resize of [N, C, H, W] to size [h, w] (or by an integer scale factor). */
export function interpolateNearest(x: Tensor, size: [number, number] | { scale: number }): Tensor {
  const s = Array.isArray(size) ? size : [x.shape[2]! * size.scale, x.shape[3]! * size.scale];
  return wrap(native.upsampleNearest2d(x.handle, s));
}
export function interpolateBilinear(x: Tensor, size: [number, number], alignCorners = false): Tensor {
  return wrap(native.upsampleBilinear2d(x.handle, size, alignCorners));
}
export function avgPool2d(x: Tensor, kernel: number, stride = kernel): Tensor {
  return wrap(native.avgPool2d(x.handle, [kernel, kernel], [stride, stride]));
}

/**
 * Scaled dot-product attention softmax(q·kᵀ·scale + mask)·v over the last two dims of q, k, v
 * ([..., L, D]); scale defaults to 1/√D. `mask` is additive (−∞ where masked).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, mask?: Tensor | null, scale?: number): Tensor {
  const d = q.shape[q.ndim - 1]!;
  return wrap(native.attention(q.handle, k.handle, v.handle, mask ? mask.handle : -1, scale ?? 1 / Math.sqrt(d)));
}

export type MseReduction = "none" | "mean" | "per-sample";
/**
 * Squared error; "per-sample" averages over every dim but the first (the Diffusion-DPO per-pair
 * error: mean over channels and pixels, not a sum).
 */
export function mseLoss(pred: Tensor, target: Tensor, reduction: MseReduction = "mean"): Tensor {
  const mode = reduction === "none" ? 0 : reduction === "mean" ? 1 : 2;
  return wrap(native.mseLoss(pred.handle, target.handle, mode));
}

// ---- autograd and runtime ------------------------------------------------------------------

/** Runs fn with gradient recording off (the reference model's pass, sampling, evaluation). */
export function noGrad<T>(fn: () => T): T {
  const previous = native.setGradEnabled(false);
  try {
    return fn();
  } finally {
    native.setGradEnabled(previous);
  }
}
export function enableGrad<T>(fn: () => T): T {
  const previous = native.setGradEnabled(true);
  try {
    return fn();
  } finally {
    native.setGradEnabled(previous);
  }
}
export function isGradEnabled(): boolean {
  return native.isGradEnabled();
}

/** Runs fn under libtorch autocast (bf16 on CPU; f16 or bf16 on CUDA). */
export function autocast<T>(device: "cpu" | "cuda", dtype: "bf16" | "f16", fn: () => T): T {
  const previousDtype = native.getAutocastDtype(device);
  const previous = native.setAutocast(true, device, SCALAR_TYPE[dtype]);
  try {
    return fn();
  } finally {
    // restore both the switch and the dtype that were in force (a nested autocast must not leak its dtype out)
    native.setAutocast(previous, device, previousDtype);
  }
}

/** The autocast dtype in force for a device. */
export function autocastState(device: "cpu" | "cuda"): { dtype: DType } {
  return { dtype: dtypeFromCode(native.getAutocastDtype(device)) };
}

export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`thread count must be a positive integer, got ${n}`);
  native.setNumThreads(n);
}
/**
 * Backpropagates `loss` on a second thread while `foreground` runs on this one, the cores split
 * between them (OpenMP teams of ⌈n/2⌉ behind and ⌊n/2⌋ here; OpenBLAS's process-wide pool ⌊n/2⌋),
 * then restores this thread's n. For independent work only: foreground must not read or reset the
 * gradients the backward writes. CPU backward runs on the thread that calls it, so this is real
 * parallelism, not a queue; a failed backward's error is thrown here after foreground finishes.
 */
export function overlapBackward<T>(loss: Tensor, foreground: () => T): T {
  const n = native.getNumThreads();
  const here = foregroundThreads(n);
  native.setThreadTeam(here, here);
  native.backwardStart(loss.handle, -1, Math.max(1, n - here));
  try {
    return foreground();
  } finally {
    try {
      native.backwardJoin();
    } finally {
      native.setThreadTeam(n, n);
    }
  }
}
/** The OpenMP team overlapBackward leaves this thread out of n. */
function foregroundThreads(n: number): number {
  return Math.max(1, Math.floor(n / 2));
}
/**
 * Runs `fn` with the thread team overlapBackward gives its foreground, so work done alone takes
 * the same kernels' paths as the same work done beside a backward (a step prepared at the start of
 * a run, as one prepared during the previous step's backward).
 */
export function withForegroundTeam<T>(fn: () => T): T {
  const n = native.getNumThreads();
  const here = foregroundThreads(n);
  native.setThreadTeam(here, here);
  try {
    return fn();
  } finally {
    native.setThreadTeam(n, n);
  }
}
/** Native generators alive (for leak tests). */
export function liveGenerators(): number {
  return native.liveGenerators();
}
export function getNumThreads(): number {
  return native.getNumThreads();
}
/** OpenBLAS's worker pool size, kept equal to getNumThreads(); null when the BLAS is not OpenBLAS. */
export function getBlasThreads(): number | null {
  const n = native.getBlasThreads();
  return n < 0 ? null : n;
}
export function cudaAvailable(): boolean {
  return native.hasCuda() && native.cudaDeviceCount() > 0;
}
export function cudaDeviceCount(): number {
  return native.cudaDeviceCount();
}
