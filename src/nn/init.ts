// Parameter initialisation with a seedable generator, following PyTorch's defaults so a model
// built here starts from the same distribution as torch.nn's.
import { Generator, full } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";
import { native } from "../tensor/native.js";

let initGenerator = new Generator(0);

/** Seeds the generator that layer constructors draw initial weights from. */
export function setInitSeed(seed: number): void {
  initGenerator = new Generator(seed);
}
export function getInitGenerator(): Generator {
  return initGenerator;
}

// Tensors on libtorch's "meta" device hold no values (describeParameters builds models there to
// list names and shapes): they are returned unfilled, and the init generator does not advance.
export function uniform(shape: number[], low: number, high: number): Tensor {
  const t = full(shape, 0);
  if (t.device === "meta") return t;
  native.uniformInto(t.handle, low, high, initGenerator.handle);
  return t;
}
export function normal(shape: number[], mean: number, std: number): Tensor {
  const t = full(shape, 0);
  if (t.device === "meta") return t;
  native.normalInto(t.handle, mean, std, initGenerator.handle);
  return t;
}
/** kaiming_uniform_(a=√5) as torch.nn.Linear/Conv2d use: U(−1/√fanIn, 1/√fanIn). */
export function kaimingUniform(shape: number[], fanIn: number): Tensor {
  const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
  return uniform(shape, -bound, bound);
}
