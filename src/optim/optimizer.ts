// Optimizers over named parameters. Each update runs in one native call per parameter that follows
// PyTorch's (AdamW) or transformers' (Adafactor) arithmetic step by step; state tensors are named
// after their parameter so a checkpoint restores them exactly.
import { native } from "../tensor/native.js";
import { Tensor, keep } from "../tensor/tensor.js";
import { zeros } from "../tensor/ops.js";

export interface OptimizerState {
  /** State tensors keyed "<param name>.<slot>", e.g. "conv_in.weight.exp_avg". */
  tensors: Map<string, Tensor>;
  /** Plain numbers: per-parameter step counts and hyper-parameters. */
  meta: { kind: string; steps: Record<string, number>; hyper: Record<string, number | null> };
}

export interface Optimizer {
  readonly kind: string;
  /** Learning rate used by the next step (schedules set it). */
  lr: number;
  readonly params: ReadonlyArray<readonly [string, Tensor]>;
  step(): void;
  zeroGrad(): void;
  stateDict(): OptimizerState;
  loadStateDict(state: OptimizerState): void;
  dispose(): void;
}

abstract class BaseOptimizer implements Optimizer {
  abstract readonly kind: string;
  protected state = new Map<string, Map<string, Tensor>>();
  protected steps = new Map<string, number>();
  constructor(readonly params: ReadonlyArray<readonly [string, Tensor]>, public lr: number) {
    if (!(lr >= 0)) throw new Error(`learning rate must be a non-negative number, got ${lr}`);
    const names = new Set<string>();
    for (const [name] of params) {
      if (names.has(name)) throw new Error(`parameter "${name}" is given to the optimizer twice`);
      names.add(name);
    }
  }
  abstract step(): void;
  protected abstract hyper(): Record<string, number | null>;

  zeroGrad(): void {
    for (const [, p] of this.params) p.grad = null;
  }

  protected slot(name: string, slot: string, shape: number[]): Tensor {
    let slots = this.state.get(name);
    if (slots === undefined) {
      slots = new Map();
      this.state.set(name, slots);
    }
    let t = slots.get(slot);
    if (t === undefined) {
      t = keep(zeros(shape));
      slots.set(slot, t);
    }
    return t;
  }

  stateDict(): OptimizerState {
    const tensors = new Map<string, Tensor>();
    for (const [name, slots] of this.state) for (const [slot, t] of slots) tensors.set(`${name}.${slot}`, t);
    return { tensors, meta: { kind: this.kind, steps: Object.fromEntries(this.steps), hyper: this.hyper() } };
  }

  loadStateDict(state: OptimizerState): void {
    if (state.meta.kind !== this.kind) {
      throw new Error(`optimizer state is for ${state.meta.kind}, but this run uses ${this.kind}; resume with the same optimizer`);
    }
    const known = new Set(this.params.map(([n]) => n));
    for (const key of state.tensors.keys()) {
      const dot = key.lastIndexOf(".");
      const name = key.slice(0, dot);
      if (!known.has(name)) throw new Error(`optimizer state names parameter "${name}", which this model does not train`);
    }
    this.dispose();
    for (const [key, t] of state.tensors) {
      const dot = key.lastIndexOf(".");
      const name = key.slice(0, dot);
      const slotName = key.slice(dot + 1);
      const copy = keep(t.clone());
      let slots = this.state.get(name);
      if (slots === undefined) {
        slots = new Map();
        this.state.set(name, slots);
      }
      slots.set(slotName, copy);
    }
    this.steps = new Map(Object.entries(state.meta.steps));
  }

  dispose(): void {
    for (const slots of this.state.values()) for (const t of slots.values()) t.dispose();
    this.state.clear();
  }
}

export interface AdamWOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** torch.optim.AdamW (decoupled weight decay), defaults (0.9, 0.999), 1e-8, 1e-2. */
export class AdamW extends BaseOptimizer {
  readonly kind = "adamw";
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  constructor(params: ReadonlyArray<readonly [string, Tensor]>, opts: AdamWOptions) {
    super(params, opts.lr);
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 1e-2;
    for (const b of [this.beta1, this.beta2]) if (!(b >= 0 && b < 1)) throw new Error(`AdamW betas must be in [0, 1), got ${b}`);
  }
  protected hyper() {
    return { beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay };
  }
  step(): void {
    for (const [name, p] of this.params) {
      if (!p.requiresGrad) continue;
      const m = this.slot(name, "exp_avg", p.shape);
      const v = this.slot(name, "exp_avg_sq", p.shape);
      const step = (this.steps.get(name) ?? 0) + 1;
      if (native.adamwStep(p.handle, m.handle, v.handle, step, this.lr, this.beta1, this.beta2, this.eps, this.weightDecay)) {
        this.steps.set(name, step);
      }
    }
  }
}

export interface AdafactorOptions {
  lr: number;
  eps1?: number;
  clipThreshold?: number;
  decayRate?: number;
  beta1?: number | null;
  weightDecay?: number;
}

/**
 * Adafactor (Shazeer & Stern) as transformers implements it with relative_step=False,
 * scale_parameter=False, warmup_init=False — the official SDXL Diffusion-DPO recipe.
 */
export class Adafactor extends BaseOptimizer {
  readonly kind = "adafactor";
  readonly eps1: number;
  readonly clipThreshold: number;
  readonly decayRate: number;
  readonly beta1: number | null;
  readonly weightDecay: number;
  constructor(params: ReadonlyArray<readonly [string, Tensor]>, opts: AdafactorOptions) {
    super(params, opts.lr);
    this.eps1 = opts.eps1 ?? 1e-30;
    this.clipThreshold = opts.clipThreshold ?? 1.0;
    this.decayRate = opts.decayRate ?? -0.8;
    this.beta1 = opts.beta1 ?? null;
    this.weightDecay = opts.weightDecay ?? 0;
  }
  protected hyper() {
    return { eps1: this.eps1, clipThreshold: this.clipThreshold, decayRate: this.decayRate, beta1: this.beta1, weightDecay: this.weightDecay };
  }
  step(): void {
    for (const [name, p] of this.params) {
      if (!p.requiresGrad) continue;
      const shape = p.shape;
      const factored = shape.length >= 2;
      const a = factored ? this.slot(name, "exp_avg_sq_row", shape.slice(0, -1)) : this.slot(name, "exp_avg_sq", shape);
      const b = factored ? this.slot(name, "exp_avg_sq_col", [...shape.slice(0, -2), shape[shape.length - 1]!]) : null;
      const m = this.beta1 !== null ? this.slot(name, "exp_avg", shape) : null;
      const step = (this.steps.get(name) ?? 0) + 1;
      const stepped = native.adafactorStep(
        p.handle, a.handle, b ? b.handle : -1, m ? m.handle : -1, step, this.lr, this.eps1,
        this.clipThreshold, this.decayRate, this.beta1 ?? 0, this.weightDecay,
      );
      if (stepped) this.steps.set(name, step);
    }
  }
}

/**
 * Clips the global L2 norm of the gradients to maxNorm (torch.nn.utils.clip_grad_norm_); returns
 * the norm before clipping. maxNorm ≤ 0 only measures.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): number {
  return native.clipGradNorm([...params].map((p) => p.handle), maxNorm);
}

/** Multiplies every gradient by factor (averaging over accumulation steps or ranks). */
export function scaleGrads(params: Iterable<Tensor>, factor: number): void {
  native.scaleGrads([...params].map((p) => p.handle), factor);
}
