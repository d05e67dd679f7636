// The ops checked against PyTorch (golden.test.ts) and by finite differences (gradcheck.test.ts).
// Ids match scripts/golden/engine/make_golden.py one to one; inputs are regenerated from the seeds
// stored in test/golden/engine/ops.json.
import { readFileSync } from "node:fs";
import {
  Generator, Tensor, attention, avgPool2d, cat, conv2d, convTranspose2d, dropout, embedding, groupNorm,
  interpolateBilinear, interpolateNearest, layerNorm, linear, logSoftmax, matmul, mseLoss, randint, randn,
  softmax, stack, triu, where, type DType,
} from "../../src/tensor/index.js";

export type InputSpec =
  | { kind: "randn" | "pos"; shape: number[]; seed: number }
  | { kind: "randint"; low: number; high: number; shape: number[]; seed: number };

export interface GoldenOp {
  id: string;
  inputs: InputSpec[];
  diff: boolean;
  wSeed: number;
  shape: number[];
  out: number[];
  grads?: (number[] | null)[];
}

export function loadGoldenOps(): GoldenOp[] {
  return (JSON.parse(readFileSync("test/golden/engine/ops.json", "utf8")) as { cases: GoldenOp[] }).cases;
}

/** The same input PyTorch drew (float inputs converted to `dtype` afterwards). */
export function makeInput(spec: InputSpec, dtype: DType = "f32"): Tensor {
  const g = new Generator(spec.seed);
  if (spec.kind === "randint") return randint(spec.low, spec.high, spec.shape, g);
  let t = randn(spec.shape, g);
  if (spec.kind === "pos") t = t.abs().add(0.5);
  return dtype === "f32" ? t : t.to(dtype);
}

const flatCat = (ts: Tensor[]): Tensor => cat(ts.map((t) => t.reshape([-1])));
const f = (t: Tensor): Tensor => t.to("f32");

type OpFn = (...xs: Tensor[]) => Tensor;
const a1 = (fn: (a: Tensor) => Tensor): OpFn => (a) => fn(a!);

export const OPS: Record<string, OpFn> = {
  // unary
  neg: a1((a) => a.neg()),
  exp: a1((a) => a.exp()),
  abs: a1((a) => a.abs()),
  sin: a1((a) => a.sin()),
  cos: a1((a) => a.cos()),
  tanh: a1((a) => a.tanh()),
  sigmoid: a1((a) => a.sigmoid()),
  relu: a1((a) => a.relu()),
  silu: a1((a) => a.silu()),
  gelu: a1((a) => a.gelu()),
  gelu_tanh: a1((a) => a.geluTanh()),
  quick_gelu: a1((a) => a.quickGelu()),
  logsigmoid: a1((a) => a.logSigmoid()),
  square: a1((a) => a.square()),
  erf: a1((a) => a.erf()),
  expm1: a1((a) => a.expm1()),
  log: a1((a) => a.log()),
  sqrt: a1((a) => a.sqrt()),
  rsqrt: a1((a) => a.rsqrt()),
  reciprocal: a1((a) => a.reciprocal()),
  log1p: a1((a) => a.log1p()),
  sign: a1((a) => a.mul(2).sign()),
  floor: a1((a) => a.mul(2).floor()),
  ceil: a1((a) => a.mul(2).ceil()),
  round: a1((a) => a.mul(2).round()),
  // binary
  add_bcast: (a, b) => a!.add(b!),
  sub_bcast: (a, b) => a!.sub(b!),
  mul: (a, b) => a!.mul(b!),
  div: (a, b) => a!.div(b!),
  pow: (a, b) => a!.pow(b!),
  maximum: (a, b) => a!.maximum(b!),
  minimum: (a, b) => a!.minimum(b!),
  remainder: (a, b) => a!.remainder(b!),
  add_scalar: a1((a) => a.add(2.5)),
  sub_scalar: a1((a) => a.sub(0.75)),
  mul_scalar: a1((a) => a.mul(-1.5)),
  div_scalar: a1((a) => a.div(3)),
  pow_scalar: a1((a) => a.pow(1.7)),
  rsub: a1((a) => a.rsub(3)),
  rdiv: a1((a) => a.rdiv(2)),
  maximum_scalar: a1((a) => a.maximum(0.1)),
  minimum_scalar: a1((a) => a.minimum(-0.2)),
  add_scaled: (a, b) => a!.addScaled(b!, -0.3),
  lerp: (a, b) => a!.lerp(b!, 0.25),
  clamp: a1((a) => a.clamp(-0.5, 0.7)),
  clamp_min: a1((a) => a.clamp(0)),
  where: (a, b) => where(a!.gt(0), a!, b!),
  compare: (a, b) => stack([a!.lt(b!), a!.le(b!), a!.gt(b!), a!.ge(b!), a!.ne(b!), a!.eq(a!)].map(f)),
  isfinite_not: a1((a) => stack([a.log().isFinite(), a.gt(0).logicalNot()].map(f))),
  // reductions
  sum_all: a1((a) => a.sum()),
  sum_dim: a1((a) => a.sum(1)),
  sum_dims_keep: a1((a) => a.sum([0, 2], true)),
  mean_all: a1((a) => a.mean()),
  mean_dim_keep: a1((a) => a.mean(-1, true)),
  amax: a1((a) => a.amax(1)),
  amin: a1((a) => a.amin(2)),
  prod_dim: a1((a) => a.prod(1)),
  prod_all: a1((a) => a.prod()),
  var_unbiased: a1((a) => a.variance(2)),
  var_biased_keep: a1((a) => a.variance([0, 1], true, false)),
  std: a1((a) => a.std(1)),
  logsumexp: a1((a) => a.logSumExp(-1)),
  norm_all: a1((a) => a.norm()),
  norm_dim_keep: a1((a) => a.norm(1, true)),
  cumsum: a1((a) => a.cumsum(1)),
  argmax_argmin: a1((a) => cat([f(a.argmax(1)), f(a.argmin(0, true)).reshape([-1])])),
  // shape
  reshape: a1((a) => a.reshape([4, 6])),
  reshape_noncontig: a1((a) => a.transpose(0, 2).reshape([4, 6])),
  permute: a1((a) => a.permute([2, 0, 1])),
  transpose: a1((a) => a.transpose(0, 2)),
  mT: a1((a) => a.mT),
  expand: a1((a) => a.expand([2, 3, 4])),
  unsqueeze: a1((a) => a.unsqueeze(-1)),
  squeeze_dim: a1((a) => a.squeeze(1)),
  squeeze_all: a1((a) => a.squeeze()),
  flatten: a1((a) => a.flatten(1, 2)),
  slice_step: a1((a) => a.slice(1, 1, 5, 2)),
  slice_neg: a1((a) => a.slice(2, -2)),
  chunk: a1((a) => flatCat(a.chunk(3, 1))),
  split: a1((a) => flatCat(a.split([2, 3], 1))),
  index_select: (a, i) => a!.indexSelect(1, i!),
  gather: (a, i) => a!.gather(1, i!),
  flip: a1((a) => a.flip([0, 2])),
  repeat: a1((a) => a.repeat([2, 1, 3])),
  pad: a1((a) => a.pad([1, 2, 0, 1], 0.5)),
  cat: (a, b) => cat([a!, b!], 1),
  stack: (a, b) => stack([a!, b!], 1),
  triu: a1((a) => triu(a, 1)),
  triu_neg: a1((a) => triu(a, -1)),
  // neural-network ops
  matmul_2d: (a, b) => matmul(a!, b!),
  matmul_bcast: (a, b) => a!.matmul(b!),
  matmul_batched: (a, b) => matmul(a!, b!),
  linear: (x, w, b) => linear(x!, w!, b!),
  linear_nobias: (x, w) => linear(x!, w!),
  conv2d: (x, w, b) => conv2d(x!, w!, b!, { padding: 1 }),
  conv2d_stride2: (x, w, b) => conv2d(x!, w!, b!, { stride: 2, padding: 1 }),
  conv2d_groups: (x, w, b) => conv2d(x!, w!, b!, { padding: 1, groups: 2 }),
  conv2d_dilation: (x, w) => conv2d(x!, w!, null, { padding: 2, dilation: 2 }),
  conv2d_1x1: (x, w) => conv2d(x!, w!),
  conv_transpose2d: (x, w, b) => convTranspose2d(x!, w!, b!, { stride: 2, padding: 1, outputPadding: 1 }),
  conv_transpose2d_groups: (x, w, b) => convTranspose2d(x!, w!, b!, { groups: 2 }),
  conv_transpose2d_k4s2: (x, w) => convTranspose2d(x!, w!, null, { stride: 2, padding: 1 }),
  group_norm: (x, w, b) => groupNorm(x!, 3, w!, b!, 1e-5),
  group_norm_plain: a1((x) => groupNorm(x, 2, null, null, 1e-6)),
  layer_norm: (x, w, b) => layerNorm(x!, [5], w!, b!, 1e-5),
  layer_norm_2d_plain: a1((x) => layerNorm(x, [3, 5])),
  softmax: a1((x) => softmax(x, -1)),
  softmax_dim0: a1((x) => x.softmax(0)),
  log_softmax: a1((x) => logSoftmax(x, 1)),
  attention: (q, k, v) => attention(q!, k!, v!),
  attention_mask_scale: (q, k, v, m) => attention(q!, k!, v!, m!, 0.3),
  interpolate_nearest_x2: a1((x) => interpolateNearest(x, { scale: 2 })),
  interpolate_nearest_size: a1((x) => interpolateNearest(x, [5, 7])),
  interpolate_bilinear: a1((x) => interpolateBilinear(x, [5, 7])),
  interpolate_bilinear_corners: a1((x) => interpolateBilinear(x, [5, 7], true)),
  avg_pool2d: a1((x) => avgPool2d(x, 2)),
  avg_pool2d_k3s2: a1((x) => avgPool2d(x, 3, 2)),
  embedding: (w, ids) => embedding(w!, ids!),
  mse_none: (a, b) => mseLoss(a!, b!, "none"),
  mse_mean: (a, b) => mseLoss(a!, b!, "mean"),
  mse_per_sample: (a, b) => mseLoss(a!, b!, "per-sample"),
  dropout: a1((a) => dropout(a, 0.3, new Generator(77))),
  to_f64_and_back: a1((a) => a.to("f64").mul(3).to(a.dtype)),
};

/** Ops whose result is only piecewise smooth in a way central differences can straddle. */
export const NOT_DIFFERENTIABLE = new Set(["sign", "floor", "ceil", "round", "compare", "isfinite_not", "argmax_argmin"]);
