// Module: named parameters, buffers and children with dotted names (the names diffusers and
// transformers use, so real checkpoints map one to one), train/eval, freezing and deep copy.
import { Tensor, keep } from "../tensor/tensor.js";
import { noGrad } from "../tensor/ops.js";

export class Module {
  // Registration order is the state-dict order; plain (non-#private) fields so deepCopy can walk them.
  _params = new Map<string, Tensor>();
  _buffers = new Map<string, Tensor>();
  _children = new Map<string, Module>();
  training = true;

  /** Registers a trainable parameter (kept out of tidy scopes, gradient on). */
  protected param(name: string, value: Tensor): Tensor {
    keep(value);
    value.setRequiresGrad(true);
    this._params.set(name, value);
    return value;
  }

  /** Registers a non-trainable tensor saved in the state dict (e.g. position ids, EMA stats). */
  protected buffer(name: string, value: Tensor): Tensor {
    keep(value);
    this._buffers.set(name, value);
    return value;
  }

  /** Registers a submodule; `null` registers nothing (an optional part absent in this config). */
  protected child<M extends Module>(name: string, module: M): M {
    this._children.set(name, module);
    return module;
  }

  /** Replaces a registered submodule (LoRA injection) and any field pointing at the old one. */
  replaceChild(name: string, module: Module): void {
    const old = this._children.get(name);
    if (old === undefined) throw new Error(`no submodule named "${name}" to replace`);
    this._children.set(name, module);
    const fields = this as unknown as Record<string, unknown>;
    for (const key of Object.keys(fields)) {
      if (fields[key] === old) fields[key] = module;
      const list = fields[key];
      if (Array.isArray(list)) list.forEach((v, i) => { if (v === old) list[i] = module; });
    }
  }

  children(): Map<string, Module> {
    return this._children;
  }

  *namedModules(prefix = ""): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [name, child] of this._children) yield* child.namedModules(prefix ? `${prefix}.${name}` : name);
  }

  namedParameters(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [name, p] of m._params) out.push([path ? `${path}.${name}` : name, p]);
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /** Parameters whose gradient is on (the ones an optimizer should update). */
  trainableParameters(): [string, Tensor][] {
    return this.namedParameters().filter(([, p]) => p.requiresGrad);
  }

  namedBuffers(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [name, b] of m._buffers) out.push([path ? `${path}.${name}` : name, b]);
    }
    return out;
  }

  numParameters(trainableOnly = false): number {
    return this.namedParameters()
      .filter(([, p]) => !trainableOnly || p.requiresGrad)
      .reduce((n, [, p]) => n + p.size, 0);
  }

  /** Parameters and buffers by dotted name: the live tensors, not copies. */
  stateDict(): Map<string, Tensor> {
    return new Map([...this.namedParameters(), ...this.namedBuffers()]);
  }

  /**
   * Copies values into this module's tensors by name (dtype converted as needed). With strict
   * (the default), missing or unexpected names are an error listing them; shape mismatches are
   * always an error.
   */
  loadStateDict(state: Map<string, Tensor>, opts: { strict?: boolean; source?: string } = {}): { missing: string[]; unexpected: string[] } {
    const strict = opts.strict ?? true;
    const own = this.stateDict();
    const missing = [...own.keys()].filter((k) => !state.has(k));
    const unexpected = [...state.keys()].filter((k) => !own.has(k));
    const where = opts.source ? ` in ${opts.source}` : "";
    if (strict && (missing.length > 0 || unexpected.length > 0)) {
      const show = (list: string[]) => list.slice(0, 20).join(", ") + (list.length > 20 ? `, … (${list.length} in all)` : "");
      const parts: string[] = [];
      if (missing.length > 0) parts.push(`missing weights: ${show(missing)}`);
      if (unexpected.length > 0) parts.push(`unexpected weights: ${show(unexpected)}`);
      throw new Error(`the checkpoint${where} does not match the model (${parts.join("; ")}). Check that the config matches the weights.`);
    }
    for (const [name, target] of own) {
      const src = state.get(name);
      if (src === undefined) continue;
      const a = target.shape.join(",");
      const b = src.shape.join(",");
      if (a !== b) throw new Error(`weight "${name}"${where} has shape [${b}] but the model expects [${a}]`);
    }
    noGrad(() => {
      for (const [name, target] of own) {
        const src = state.get(name);
        if (src !== undefined) target.copy_(src);
      }
    });
    return { missing, unexpected };
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Turns gradients off (or on) for every parameter. */
  requiresGrad(flag: boolean): this {
    for (const p of this.parameters()) p.setRequiresGrad(flag);
    return this;
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  /** Frees every parameter and buffer; the module is unusable afterwards. */
  dispose(): void {
    for (const [, t] of this.stateDict()) t.dispose();
  }

  /**
   * An independent deep copy: new parameter storage (detached leaves with the same gradient
   * flags), the same structure and config. The frozen Diffusion-DPO reference is such a copy.
   */
  deepCopy(): this {
    return deepCopyValue(this, new Map()) as this;
  }
}

function deepCopyValue(value: unknown, memo: Map<object, unknown>): unknown {
  if (value === null || typeof value !== "object") return value;
  const seen = memo.get(value);
  if (seen !== undefined) return seen;
  if (value instanceof Tensor) {
    const copy = noGrad(() => {
      // the detached view is a second handle on the same storage; free it, keep only the clone
      const view = value.detach();
      const clone = view.clone();
      view.dispose();
      return clone;
    });
    keep(copy);
    if (value.requiresGrad) copy.setRequiresGrad(true);
    memo.set(value, copy);
    return copy;
  }
  if (value instanceof Module) {
    const copy = Object.create(Object.getPrototypeOf(value) as object) as Record<string, unknown>;
    memo.set(value, copy);
    for (const key of Object.keys(value)) copy[key] = deepCopyValue((value as unknown as Record<string, unknown>)[key], memo);
    return copy;
  }
  if (Array.isArray(value)) {
    const copy: unknown[] = [];
    memo.set(value, copy);
    for (const v of value) copy.push(deepCopyValue(v, memo));
    return copy;
  }
  if (value instanceof Map) {
    const copy = new Map();
    memo.set(value, copy);
    for (const [k, v] of value) copy.set(k, deepCopyValue(v, memo));
    return copy;
  }
  // Configs and other plain data are shared: modules treat them as read-only.
  return value;
}

/** A list of modules registered as "0", "1", … (nn.ModuleList). */
export class ModuleList<M extends Module = Module> extends Module {
  readonly items: M[] = [];
  constructor(modules: M[] = []) {
    super();
    for (const m of modules) this.push(m);
  }
  push(m: M): void {
    this.child(String(this.items.length), m);
    this.items.push(m);
  }
  get length(): number {
    return this.items.length;
  }
  at(i: number): M {
    const m = this.items[i];
    if (m === undefined) throw new Error(`ModuleList index ${i} out of range (${this.items.length} items)`);
    return m;
  }
  [Symbol.iterator](): Iterator<M> {
    return this.items[Symbol.iterator]();
  }
}
