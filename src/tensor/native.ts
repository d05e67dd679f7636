// Loads the compiled libtorch binding. The only file that knows where the .node file lives.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultThreadChoice, type ThreadChoice } from "./threads.js";

/** Signatures of the native functions; handles are small integers into the native tensor table. */
export interface NativeBinding {
  setNumThreads(n: number): void;
  getNumThreads(): number;
  /** OpenBLAS's worker pool size (resized with setNumThreads), −1 when the BLAS is not OpenBLAS. */
  getBlasThreads(): number;
  /** libtorch's op profiler on; profileStop() writes a Chrome trace to `path`. */
  profileStart(path: string): void;
  profileStop(): void;
  hasCuda(): boolean;
  cudaDeviceCount(): number;
  manualSeed(seed: number): void;
  freeTensor(h: number): void;
  freeTensors(hs: number[]): void;
  liveTensors(): number;
  liveTensorBytes(): number;
  externalMemory(): number;
  isGradEnabled(): boolean;
  setGradEnabled(enabled: boolean): boolean;
  setAutocast(enabled: boolean, device: string, dtype: number): boolean;
  getAutocastDtype(device: string): number;

  fromBytes(bytes: ArrayBufferView, shape: number[], dtype: number): number;
  toBytes(h: number): ArrayBuffer;
  item(h: number): number;
  shape(h: number): number[];
  dtype(h: number): number;
  device(h: number): string;
  full(shape: number[], value: number, dtype: number, device: string): number;
  arange(start: number, end: number, step: number, dtype: number, device: string): number;
  linspace(start: number, end: number, steps: number, dtype: number, device: string): number;
  to(h: number, dtype: number): number;
  toDevice(h: number, device: string): number;
  clone(h: number): number;
  contiguous(h: number): number;
  detach(h: number): number;
  sameTensor(h: number): number;

  generatorNew(seed: number): number;
  generatorFree(g: number): void;
  liveGenerators(): number;
  generatorSeed(g: number, seed: number): void;
  generatorGetState(g: number): ArrayBuffer;
  generatorSetState(g: number, state: ArrayBuffer): void;
  randn(shape: number[], g: number, dtype: number, device: string): number;
  rand(shape: number[], g: number, dtype: number, device: string): number;
  randint(low: number, high: number, shape: number[], g: number, device: string): number;
  randperm(n: number, g: number): number;
  dropout(h: number, p: number, g: number): number;

  unary(code: number, h: number): number;
  binary(code: number, a: number, b: number): number;
  binaryScalar(code: number, a: number, s: number): number;
  addScaled(a: number, b: number, alpha: number): number;
  where(cond: number, a: number, b: number): number;
  clamp(h: number, min: number | null, max: number | null): number;
  lerp(a: number, b: number, w: number): number;
  triu(h: number, k: number): number;

  reduce(code: number, h: number, dims: number[] | null, keepdim: boolean, unbiased?: boolean): number;
  argmax(h: number, dim: number, keepdim: boolean): number;
  argmin(h: number, dim: number, keepdim: boolean): number;
  cumsum(h: number, dim: number): number;

  reshape(h: number, shape: number[]): number;
  permute(h: number, dims: number[]): number;
  transpose(h: number, a: number, b: number): number;
  expand(h: number, shape: number[]): number;
  cat(hs: number[], dim: number): number;
  stack(hs: number[], dim: number): number;
  split(h: number, sizes: number[], dim: number): number[];
  slice(h: number, dim: number, start: number, end: number, step: number): number;
  indexSelect(h: number, dim: number, index: number): number;
  gather(h: number, dim: number, index: number): number;
  flip(h: number, dims: number[]): number;
  repeat(h: number, reps: number[]): number;
  pad(h: number, pads: number[], value: number): number;

  matmul(a: number, b: number): number;
  linear(x: number, w: number, b: number): number;
  conv2d(x: number, w: number, b: number, stride: number[], padding: number[], dilation: number[], groups: number): number;
  convTranspose2d(x: number, w: number, b: number, stride: number[], padding: number[], outputPadding: number[], groups: number, dilation: number[]): number;
  groupNorm(x: number, groups: number, w: number, b: number, eps: number): number;
  layerNorm(x: number, shape: number[], w: number, b: number, eps: number): number;
  softmax(h: number, dim: number): number;
  logSoftmax(h: number, dim: number): number;
  embedding(weight: number, ids: number): number;
  upsampleNearest2d(h: number, size: number[]): number;
  upsampleBilinear2d(h: number, size: number[], alignCorners: boolean): number;
  avgPool2d(h: number, kernel: number[], stride: number[]): number;
  attention(q: number, k: number, v: number, mask: number, scale: number): number;
  mseLoss(a: number, b: number, mode: number): number;

  setRequiresGrad(h: number, flag: boolean): void;
  requiresGrad(h: number): boolean;
  backward(h: number, grad: number, retainGraph: boolean): void;
  /** Starts h's backward on a second thread with an OpenMP team of `threads`; backwardJoin waits for it. */
  backwardStart(h: number, grad: number, threads: number): void;
  /** Waits for the background backward (no-op when none runs) and rethrows its error. */
  backwardJoin(): void;
  /** The calling thread's OpenMP team size; OpenBLAS's (process-wide) pool too when `blas` is given. */
  setThreadTeam(threads: number, blas?: number): void;
  grad(h: number): number;
  setGrad(h: number, grad: number): void;

  copyInto(dst: number, src: number): void;
  lerpInto(dst: number, src: number, weight: number): void;
  addInto(dst: number, src: number, alpha: number): void;
  mulInto(dst: number, factor: number): void;
  fillInto(dst: number, value: number): void;
  normalInto(dst: number, mean: number, std: number, g: number): void;
  uniformInto(dst: number, low: number, high: number, g: number): void;

  adamwStep(p: number, m: number, v: number, step: number, lr: number, b1: number, b2: number, eps: number, wd: number): boolean;
  adafactorStep(p: number, a: number, b: number, m: number, step: number, lr: number, eps1: number, clip: number, decay: number, beta1: number, wd: number): boolean;
  clipGradNorm(params: number[], maxNorm: number): number;
  scaleGrads(params: number[], factor: number): void;

  initProcessGroup(backend: string, addr: string, port: number, rank: number, worldSize: number, timeoutMs: number): void;
  destroyProcessGroup(): void;
  processGroupInfo(): { initialised: boolean; rank: number; worldSize: number };
  allReduce(hs: number[], op: string): void;
  broadcast(hs: number[], root: number): void;
  barrier(): void;
  allReduceGradients(params: number[], bucketBytes: number): number;
  createReducer(params: number[], bucketBytes: number, firstBucketBytes: number): number;
  reducerInfo(id: number): { buckets: { params: number; bytes: number }[] };
  reducerArm(id: number): void;
  reducerFinish(id: number): { buckets: number; launchedInBackward: number; unready: number; waitMs: number };
  reducerDispose(id: number): void;
}

function findBinding(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/tensor (tsx) or dist/src/tensor (compiled): walk up to the package root.
  for (let dir = here, i = 0; i < 5; i++, dir = resolve(dir, "..")) {
    const candidate = join(dir, "build", "Release", "diffusion_dpo.node");
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(
    "The native libtorch binding is not built (build/Release/diffusion_dpo.node is missing). " +
      "Run `npm run build:native` after installing libtorch (`apt-get install -y libtorch-dev libopenblas0-pthread`).",
  );
}

// libgomp reads its wait policy once, when libtorch loads it with the binding below. Its default
// lets a worker spin after each parallel region, and on a 2-core machine those spinning workers
// take the cores that OpenBLAS's pool and the JavaScript thread need: a LoRA DPO step on
// emoji-base took 1,874 ms at 2 threads against 1,279 ms at 1 thread, and 1,098 ms with passive
// waiting (scripts/perf/overlap-probe.ts, medians of 8). A policy the user set is kept. Child
// processes (the bench's PyTorch twin) inherit the variable, so both sides run with it.
if ((process.env.OMP_WAIT_POLICY ?? "").trim() === "" && (process.env.GOMP_SPINCOUNT ?? "").trim() === "") {
  process.env.OMP_WAIT_POLICY = "PASSIVE";
}

const require = createRequire(import.meta.url);
export const native: NativeBinding = require(findBinding()) as NativeBinding;

/** How the intra-op thread count was chosen when the binding loaded (see threads.ts). */
export const initialThreads: ThreadChoice = defaultThreadChoice();
native.setNumThreads(initialThreads.threads);
