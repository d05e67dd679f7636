// The Tensor type: a handle into libtorch's memory, plus the ownership rules.
//
// Ownership: native tensors are invisible to V8's garbage collector, so every tensor belongs to
// the innermost `tidy()` scope that was open when it was made, and is freed when that scope ends
// unless the scope returns it (then it moves to the parent scope) or `keep()` exempts it.
// `dispose()` frees one at once. Tensors made outside any scope are freed by a
// FinalizationRegistry when collected — a safety net, not a rule to rely on in loops.
import { native } from "./native.js";

export type DType = "f32" | "f16" | "bf16" | "f64" | "i64" | "i32" | "i16" | "i8" | "u8" | "bool";
export type Device = string; // "cpu", "cuda", "cuda:1"

/** libtorch ScalarType codes. */
export const SCALAR_TYPE: Record<DType, number> = {
  u8: 0, i8: 1, i16: 2, i32: 3, i64: 4, f16: 5, f32: 6, f64: 7, bool: 11, bf16: 15,
};
const DTYPE_OF_CODE = new Map<number, DType>(
  Object.entries(SCALAR_TYPE).map(([k, v]) => [v, k as DType]),
);
export const DTYPE_BYTES: Record<DType, number> = {
  u8: 1, i8: 1, i16: 2, i32: 4, i64: 8, f16: 2, f32: 4, f64: 8, bool: 1, bf16: 2,
};

export type TypedArrayOf<D extends DType> = D extends "f32"
  ? Float32Array
  : D extends "f64"
    ? Float64Array
    : D extends "i64"
      ? BigInt64Array
      : D extends "i32"
        ? Int32Array
        : D extends "i16"
          ? Int16Array
          : D extends "i8"
            ? Int8Array
            : D extends "f16" | "bf16"
              ? Uint16Array
              : Uint8Array;

export function typedArrayFor(dtype: DType, buffer: ArrayBuffer): ArrayBufferView {
  switch (dtype) {
    case "f32": return new Float32Array(buffer);
    case "f64": return new Float64Array(buffer);
    case "i64": return new BigInt64Array(buffer);
    case "i32": return new Int32Array(buffer);
    case "i16": return new Int16Array(buffer);
    case "i8": return new Int8Array(buffer);
    case "f16":
    case "bf16": return new Uint16Array(buffer);
    case "u8":
    case "bool": return new Uint8Array(buffer);
  }
}

export function dtypeFromCode(code: number): DType {
  const d = DTYPE_OF_CODE.get(code);
  if (d === undefined) throw new Error(`unsupported libtorch scalar type ${code}`);
  return d;
}

// ---- scopes --------------------------------------------------------------------------------

type Scope = Set<Tensor>;
const scopes: Scope[] = [];
const finalizer = new FinalizationRegistry<number>((handle) => native.freeTensor(handle));

/** Wraps a fresh native handle; every op result goes through here. */
export function wrap(handle: number): Tensor {
  return new Tensor(handle);
}

function track(t: Tensor): void {
  const scope = scopes[scopes.length - 1];
  if (scope !== undefined) scope.add(t);
  else t._registerFinalizer();
}

function collectTensors(value: unknown, into: Set<Tensor>, depth = 0): void {
  if (depth > 4 || value === null || typeof value !== "object") return;
  if (value instanceof Tensor) {
    into.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collectTensors(v, into, depth + 1);
    return;
  }
  if (value instanceof Map) {
    for (const v of value.values()) collectTensors(v, into, depth + 1);
    return;
  }
  if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, into, depth + 1);
  }
}

/**
 * Runs `fn` in a scope: tensors created inside are freed when it returns, except those found in
 * its return value (a tensor, or arrays / plain objects / Maps holding tensors), which move to the
 * enclosing scope. Synchronous only: await inside would let other work leak into the scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Scope = new Set();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (err) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw err;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const t of scope) t.dispose();
    throw new Error("tidy() takes a synchronous function; dispose tensors explicitly in async code");
  }
  const kept = new Set<Tensor>();
  collectTensors(result, kept);
  // Free the scope's tensors in one native call: each belongs to this scope only (a tensor is
  // tracked by one scope at a time), so no other scope needs updating.
  const handles: number[] = [];
  for (const t of scope) {
    if (kept.has(t)) {
      if (!t.isDisposed) track(t);
    } else {
      const h = t._release();
      if (h >= 0) handles.push(h);
    }
  }
  if (handles.length > 0) native.freeTensors(handles);
  return result;
}

/** Exempts tensors from every scope: they live until disposed (parameters, optimizer state). */
export function keep<T extends Tensor | Tensor[]>(value: T): T {
  const list = Array.isArray(value) ? value : [value];
  for (const t of list) {
    for (const s of scopes) s.delete(t);
    t._unregisterFinalizer();
  }
  return value;
}

/** Frees every tensor in a value (tensors, arrays or plain objects of them). */
export function dispose(value: unknown): void {
  const found = new Set<Tensor>();
  collectTensors(value, found);
  for (const t of found) t.dispose();
}

/** Number of live native tensors (for leak tests and memory reports). */
export function liveTensors(): number {
  return native.liveTensors();
}

/** Bytes held by live native tensors (views counted at their own size). */
export function liveTensorBytes(): number {
  return native.liveTensorBytes();
}

/**
 * External memory V8 has been told about (all addons of this process; tensor bytes are reported
 * in 4 MiB chunks), so the garbage collector sees native tensors' weight.
 */
export function reportedExternalMemory(): number {
  return native.externalMemory();
}

// ---- the tensor ----------------------------------------------------------------------------

export class Tensor {
  #handle: number;
  #shape: number[] | undefined;
  #dtype: DType | undefined;
  #finalized = false; // registered with the FinalizationRegistry (made outside any scope)

  constructor(handle: number) {
    this.#handle = handle;
    track(this);
  }

  /** The native handle; throws if this tensor was disposed. */
  get handle(): number {
    if (this.#handle < 0) {
      const known = this.#shape !== undefined ? ` (shape [${this.#shape.join(", ")}])` : "";
      throw new Error(
        `this tensor${known} was disposed and can no longer be used: it was freed by dispose() or when ` +
          "the tidy() scope that made it ended; return it from that scope or keep() it to use it later",
      );
    }
    return this.#handle;
  }

  get isDisposed(): boolean {
    return this.#handle < 0;
  }

  dispose(): void {
    if (this.#handle < 0) return;
    native.freeTensor(this.#handle);
    this._unregisterFinalizer();
    for (let i = scopes.length - 1; i >= 0; i--) scopes[i]!.delete(this);
    this.#handle = -1;
  }

  /** @internal Marks this tensor disposed and hands its native handle to the caller to free (−1 if already disposed). */
  _release(): number {
    const h = this.#handle;
    if (h < 0) return -1;
    this.#handle = -1;
    this._unregisterFinalizer();
    return h;
  }
  /** @internal */
  _registerFinalizer(): void {
    if (this.#finalized || this.#handle < 0) return;
    finalizer.register(this, this.#handle, this);
    this.#finalized = true;
  }
  /** @internal */
  _unregisterFinalizer(): void {
    if (!this.#finalized) return;
    finalizer.unregister(this);
    this.#finalized = false;
  }

  get shape(): number[] {
    if (this.#shape === undefined) this.#shape = native.shape(this.handle);
    return this.#shape;
  }

  get dtype(): DType {
    if (this.#dtype === undefined) this.#dtype = dtypeFromCode(native.dtype(this.handle));
    return this.#dtype;
  }

  get device(): Device {
    return native.device(this.handle);
  }

  get ndim(): number {
    return this.shape.length;
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  toString(): string {
    return this.isDisposed ? "Tensor(disposed)" : `Tensor(${this.dtype}, [${this.shape.join(", ")}], ${this.device})`;
  }

  // --- data out ---
  /** A copy of the data as a typed array of this tensor's dtype (f16/bf16 as raw Uint16 bits). */
  data(): ArrayBufferView {
    return typedArrayFor(this.dtype, native.toBytes(this.handle));
  }
  /** The data converted to float32. */
  toFloat32Array(): Float32Array {
    if (this.dtype === "f32") return new Float32Array(native.toBytes(this.handle));
    const h = native.to(this.handle, SCALAR_TYPE.f32);
    try {
      return new Float32Array(native.toBytes(h));
    } finally {
      native.freeTensor(h);
    }
  }
  toFloat64Array(): Float64Array {
    const h = native.to(this.handle, SCALAR_TYPE.f64);
    try {
      return new Float64Array(native.toBytes(h));
    } finally {
      native.freeTensor(h);
    }
  }
  /** Plain numbers (flattened), for small tensors. */
  toArray(): number[] {
    return Array.from(this.toFloat64Array());
  }
  item(): number {
    return native.item(this.handle);
  }

  // --- conversion ---
  to(dtype: DType): Tensor {
    return wrap(native.to(this.handle, SCALAR_TYPE[dtype]));
  }
  toDevice(device: Device): Tensor {
    return wrap(native.toDevice(this.handle, device));
  }
  cpu(): Tensor {
    return this.toDevice("cpu");
  }
  float(): Tensor {
    return this.to("f32");
  }
  clone(): Tensor {
    return wrap(native.clone(this.handle));
  }
  contiguous(): Tensor {
    return wrap(native.contiguous(this.handle));
  }
  detach(): Tensor {
    return wrap(native.detach(this.handle));
  }

  // --- autograd ---
  get requiresGrad(): boolean {
    return native.requiresGrad(this.handle);
  }
  setRequiresGrad(flag = true): this {
    native.setRequiresGrad(this.handle, flag);
    return this;
  }
  /** The accumulated gradient as a new tensor sharing its storage, or null. */
  get grad(): Tensor | null {
    const h = native.grad(this.handle);
    return h < 0 ? null : wrap(h);
  }
  set grad(g: Tensor | null) {
    native.setGrad(this.handle, g === null ? -1 : g.handle);
  }
  backward(gradient?: Tensor, retainGraph = false): void {
    native.backward(this.handle, gradient === undefined ? -1 : gradient.handle, retainGraph);
  }

  // --- elementwise ---
  add(o: Tensor | number): Tensor { return binaryOp(B.ADD, this, o); }
  sub(o: Tensor | number): Tensor { return binaryOp(B.SUB, this, o); }
  mul(o: Tensor | number): Tensor { return binaryOp(B.MUL, this, o); }
  div(o: Tensor | number): Tensor { return binaryOp(B.DIV, this, o); }
  pow(o: Tensor | number): Tensor { return binaryOp(B.POW, this, o); }
  /** s - this */
  rsub(s: number): Tensor { return wrap(native.binaryScalar(B.RSUB, this.handle, s)); }
  /** s / this */
  rdiv(s: number): Tensor { return wrap(native.binaryScalar(B.RDIV, this.handle, s)); }
  maximum(o: Tensor | number): Tensor { return binaryOp(B.MAXIMUM, this, o); }
  minimum(o: Tensor | number): Tensor { return binaryOp(B.MINIMUM, this, o); }
  eq(o: Tensor | number): Tensor { return binaryOp(B.EQ, this, o); }
  ne(o: Tensor | number): Tensor { return binaryOp(B.NE, this, o); }
  lt(o: Tensor | number): Tensor { return binaryOp(B.LT, this, o); }
  le(o: Tensor | number): Tensor { return binaryOp(B.LE, this, o); }
  gt(o: Tensor | number): Tensor { return binaryOp(B.GT, this, o); }
  ge(o: Tensor | number): Tensor { return binaryOp(B.GE, this, o); }
  logicalAnd(o: Tensor): Tensor { return binaryOp(B.LOGICAL_AND, this, o); }
  logicalOr(o: Tensor): Tensor { return binaryOp(B.LOGICAL_OR, this, o); }
  remainder(o: Tensor | number): Tensor { return binaryOp(B.REMAINDER, this, o); }
  /** this + alpha·o in one kernel. */
  addScaled(o: Tensor, alpha: number): Tensor { return wrap(native.addScaled(this.handle, o.handle, alpha)); }
  lerp(o: Tensor, weight: number): Tensor { return wrap(native.lerp(this.handle, o.handle, weight)); }
  clamp(min: number | null, max: number | null = null): Tensor { return wrap(native.clamp(this.handle, min, max)); }

  neg(): Tensor { return unaryOp(U.NEG, this); }
  exp(): Tensor { return unaryOp(U.EXP, this); }
  log(): Tensor { return unaryOp(U.LOG, this); }
  sqrt(): Tensor { return unaryOp(U.SQRT, this); }
  rsqrt(): Tensor { return unaryOp(U.RSQRT, this); }
  abs(): Tensor { return unaryOp(U.ABS, this); }
  sin(): Tensor { return unaryOp(U.SIN, this); }
  cos(): Tensor { return unaryOp(U.COS, this); }
  tanh(): Tensor { return unaryOp(U.TANH, this); }
  sigmoid(): Tensor { return unaryOp(U.SIGMOID, this); }
  relu(): Tensor { return unaryOp(U.RELU, this); }
  silu(): Tensor { return unaryOp(U.SILU, this); }
  /** Exact (erf) GELU. */
  gelu(): Tensor { return unaryOp(U.GELU, this); }
  geluTanh(): Tensor { return unaryOp(U.GELU_TANH, this); }
  /** x·σ(1.702x), CLIP's activation. */
  quickGelu(): Tensor { return unaryOp(U.QUICK_GELU, this); }
  logSigmoid(): Tensor { return unaryOp(U.LOGSIGMOID, this); }
  square(): Tensor { return unaryOp(U.SQUARE, this); }
  sign(): Tensor { return unaryOp(U.SIGN, this); }
  floor(): Tensor { return unaryOp(U.FLOOR, this); }
  ceil(): Tensor { return unaryOp(U.CEIL, this); }
  round(): Tensor { return unaryOp(U.ROUND, this); }
  reciprocal(): Tensor { return unaryOp(U.RECIPROCAL, this); }
  erf(): Tensor { return unaryOp(U.ERF, this); }
  isFinite(): Tensor { return unaryOp(U.ISFINITE, this); }
  log1p(): Tensor { return unaryOp(U.LOG1P, this); }
  expm1(): Tensor { return unaryOp(U.EXPM1, this); }
  logicalNot(): Tensor { return unaryOp(U.LOGICAL_NOT, this); }

  // --- reductions (dims may be negative; omitted = all) ---
  sum(dims?: number | number[], keepdim = false): Tensor { return reduceOp(R.SUM, this, dims, keepdim); }
  mean(dims?: number | number[], keepdim = false): Tensor { return reduceOp(R.MEAN, this, dims, keepdim); }
  amax(dims?: number | number[], keepdim = false): Tensor { return reduceOp(R.AMAX, this, dims, keepdim); }
  amin(dims?: number | number[], keepdim = false): Tensor { return reduceOp(R.AMIN, this, dims, keepdim); }
  prod(dims?: number | number[], keepdim = false): Tensor { return reduceOp(R.PROD, this, dims, keepdim); }
  variance(dims?: number | number[], keepdim = false, unbiased = true): Tensor { return reduceOp(R.VAR, this, dims, keepdim, unbiased); }
  std(dims?: number | number[], keepdim = false, unbiased = true): Tensor { return reduceOp(R.STD, this, dims, keepdim, unbiased); }
  logSumExp(dims: number | number[], keepdim = false): Tensor { return reduceOp(R.LOGSUMEXP, this, dims, keepdim); }
  /** L2 norm over dims. */
  norm(dims?: number | number[], keepdim = false): Tensor { return reduceOp(R.NORM, this, dims, keepdim); }
  any(dims?: number | number[], keepdim = false): Tensor { return reduceOp(R.ANY, this, dims, keepdim); }
  all(dims?: number | number[], keepdim = false): Tensor { return reduceOp(R.ALL, this, dims, keepdim); }
  argmax(dim: number, keepdim = false): Tensor { return wrap(native.argmax(this.handle, dim, keepdim)); }
  argmin(dim: number, keepdim = false): Tensor { return wrap(native.argmin(this.handle, dim, keepdim)); }
  cumsum(dim: number): Tensor { return wrap(native.cumsum(this.handle, dim)); }

  // --- shape ---
  reshape(shape: number[]): Tensor { return wrap(native.reshape(this.handle, shape)); }
  view(shape: number[]): Tensor { return this.reshape(shape); }
  flatten(startDim = 0, endDim = -1): Tensor {
    const s = this.shape;
    const start = normDim(startDim, s.length);
    const end = normDim(endDim, s.length);
    const mid = s.slice(start, end + 1).reduce((a, b) => a * b, 1);
    return this.reshape([...s.slice(0, start), mid, ...s.slice(end + 1)]);
  }
  permute(dims: number[]): Tensor { return wrap(native.permute(this.handle, dims)); }
  transpose(a: number, b: number): Tensor { return wrap(native.transpose(this.handle, a, b)); }
  /** Transpose of the last two dims. */
  get mT(): Tensor { return this.transpose(-2, -1); }
  expand(shape: number[]): Tensor { return wrap(native.expand(this.handle, shape)); }
  unsqueeze(dim: number): Tensor {
    const s = [...this.shape];
    s.splice(normDim(dim, s.length + 1), 0, 1);
    return this.reshape(s);
  }
  squeeze(dim?: number): Tensor {
    const s = this.shape;
    if (dim === undefined) return this.reshape(s.filter((d) => d !== 1));
    const d = normDim(dim, s.length);
    if (s[d] !== 1) return this.reshape(s);
    return this.reshape([...s.slice(0, d), ...s.slice(d + 1)]);
  }
  /** Elements [start, end) with step along dim (negative indices count from the end). */
  slice(dim: number, start: number, end?: number, step = 1): Tensor {
    const size = this.shape[normDim(dim, this.ndim)]!;
    const s = start < 0 ? start + size : start;
    const e = end === undefined ? size : end < 0 ? end + size : end;
    return wrap(native.slice(this.handle, dim, s, e, step));
  }
  /** `n` near-equal pieces along dim, as torch.chunk. */
  chunk(n: number, dim = 0): Tensor[] {
    const size = this.shape[normDim(dim, this.ndim)]!;
    const piece = Math.ceil(size / n);
    const sizes: number[] = [];
    for (let left = size; left > 0; left -= piece) sizes.push(Math.min(piece, left));
    return this.split(sizes, dim);
  }
  split(sizes: number[], dim = 0): Tensor[] {
    return native.split(this.handle, sizes, dim).map(wrap);
  }
  indexSelect(dim: number, index: Tensor): Tensor { return wrap(native.indexSelect(this.handle, dim, index.handle)); }
  gather(dim: number, index: Tensor): Tensor { return wrap(native.gather(this.handle, dim, index.handle)); }
  flip(dims: number[]): Tensor { return wrap(native.flip(this.handle, dims)); }
  repeat(reps: number[]): Tensor { return wrap(native.repeat(this.handle, reps)); }
  /** Constant padding, pads ordered as torch.nn.functional.pad (last dim first). */
  pad(pads: number[], value = 0): Tensor { return wrap(native.pad(this.handle, pads, value)); }
  matmul(o: Tensor): Tensor { return wrap(native.matmul(this.handle, o.handle)); }
  softmax(dim: number): Tensor { return wrap(native.softmax(this.handle, dim)); }
  logSoftmax(dim: number): Tensor { return wrap(native.logSoftmax(this.handle, dim)); }

  // --- in-place updates, outside autograd (weights, optimizer state, EMA) ---
  copy_(src: Tensor): this { native.copyInto(this.handle, src.handle); return this; }
  lerp_(src: Tensor, weight: number): this { native.lerpInto(this.handle, src.handle, weight); return this; }
  add_(src: Tensor, alpha = 1): this { native.addInto(this.handle, src.handle, alpha); return this; }
  mul_(factor: number): this { native.mulInto(this.handle, factor); return this; }
  fill_(value: number): this { native.fillInto(this.handle, value); return this; }
}

export function normDim(dim: number, ndim: number): number {
  const d = dim < 0 ? dim + ndim : dim;
  if (d < 0 || d >= ndim) throw new Error(`dimension ${dim} is out of range for a tensor of ${ndim} dims`);
  return d;
}

// Opcodes shared with native/ops.cc.
export const U = {
  NEG: 0, EXP: 1, LOG: 2, SQRT: 3, RSQRT: 4, ABS: 5, SIN: 6, COS: 7, TANH: 8, SIGMOID: 9, RELU: 10,
  SILU: 11, GELU: 12, GELU_TANH: 13, LOGSIGMOID: 14, SQUARE: 15, SIGN: 16, FLOOR: 17, CEIL: 18,
  ROUND: 19, RECIPROCAL: 20, ERF: 21, ISFINITE: 22, LOG1P: 23, EXPM1: 24, LOGICAL_NOT: 25,
  QUICK_GELU: 26,
} as const;
export const B = {
  ADD: 0, SUB: 1, MUL: 2, DIV: 3, POW: 4, MAXIMUM: 5, MINIMUM: 6, EQ: 7, NE: 8, LT: 9, LE: 10,
  GT: 11, GE: 12, LOGICAL_AND: 13, LOGICAL_OR: 14, RSUB: 15, RDIV: 16, RPOW: 17, ATAN2: 18,
  REMAINDER: 19,
} as const;
export const R = {
  SUM: 0, MEAN: 1, AMAX: 2, AMIN: 3, PROD: 4, VAR: 5, STD: 6, LOGSUMEXP: 7, NORM: 8, ANY: 9, ALL: 10,
} as const;

function unaryOp(code: number, x: Tensor): Tensor {
  return wrap(native.unary(code, x.handle));
}
function binaryOp(code: number, a: Tensor, b: Tensor | number): Tensor {
  return typeof b === "number"
    ? wrap(native.binaryScalar(code, a.handle, b))
    : wrap(native.binary(code, a.handle, b.handle));
}
function reduceOp(code: number, x: Tensor, dims: number | number[] | undefined, keepdim: boolean, unbiased = false): Tensor {
  const d = dims === undefined ? null : typeof dims === "number" ? [dims] : dims;
  return wrap(native.reduce(code, x.handle, d, keepdim, unbiased));
}
