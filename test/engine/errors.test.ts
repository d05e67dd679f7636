// Misuse produces clear errors naming the op, the shapes/dtypes, the file or the option; the
// process never aborts. Also: state-dict name checks and deep-copy independence.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as T from "../../src/tensor/index.js";
import { Conv2d, GroupNorm, Linear, Module, setInitSeed } from "../../src/nn/index.js";
import { AdamW } from "../../src/optim/index.js";

test("shape mismatches name the op and the input shapes in argument order", () => {
  T.tidy(() => {
    const a = T.zeros([2, 3]);
    const b = T.zeros([4, 5]);
    assert.throws(() => T.matmul(a, b), /^Error: matmul: .*\(2x3 and 4x5\) \(inputs: \[2, 3\]:Float \[4, 5\]:Float\)$/);
    assert.throws(() => a.add(b), /^Error: binary\(add\): The size of tensor a \(3\) must match .*\(inputs: \[2, 3\]:Float \[4, 5\]:Float\)/);
    assert.throws(() => a.sum(5), /reduce\(sum\): .*\(inputs: \[2, 3\]:Float\)/);
    assert.throws(() => T.conv2d(T.zeros([1, 3, 4, 4]), T.zeros([2, 4, 3, 3])), /conv2d: .*to have 4 channels, but got 3 channels.*\(inputs: \[1, 3, 4, 4\]:Float \[2, 4, 3, 3\]:Float\)/);
    assert.throws(() => T.cat([a, b]), /cat: Sizes of tensors must match.*\(inputs: \[2, 3\]:Float \[4, 5\]:Float\)/);
    assert.throws(() => a.reshape([4]), /reshape: shape '\[4\]' is invalid for input of size 6/);
    assert.throws(() => T.groupNorm(T.zeros([1, 6, 2, 2]), 4), /groupNorm: .*divisible by num_groups/);
    assert.throws(() => a.unsqueeze(5), /dimension 5 is out of range for a tensor of 3 dims/);
    assert.throws(() => a.item(), /item\(\) needs a tensor of one element \(inputs: \[2, 3\]:Float\)/);
    assert.throws(() => new GroupNorm(4, 6), /GroupNorm: 6 channels cannot be split into 4 groups/);
  });
});

test("wrong dtypes are errors naming the dtypes", () => {
  T.tidy(() => {
    const a = T.zeros([2, 3]);
    assert.throws(() => T.matmul(a, T.zeros([3, 2], { dtype: "i64" })), /matmul: expected scalar type Float but found Long \(inputs: \[2, 3\]:Float \[3, 2\]:Long\)/);
    assert.throws(() => T.embedding(T.zeros([4, 2]), T.zeros([3])), /embedding: .*indices.*Long, Int.*Float/);
    assert.throws(() => a.gather(1, T.zeros([2, 3])), /gather: .*int64 for index/);
    assert.throws(() => T.tensor(new Uint16Array(2)), /Uint16Array holds raw f16\/bf16 bits; pass \{ dtype: 'f16' \}/);
  });
});

test("a disposed tensor is a clear error, never a crash; disposing twice is harmless", () => {
  const d = T.zeros([2, 5]);
  void d.shape;
  d.dispose();
  d.dispose();
  assert.equal(d.isDisposed, true);
  assert.equal(String(d), "Tensor(disposed)");
  assert.throws(() => d.add(1), /this tensor \(shape \[2, 5\]\) was disposed .*return it from that scope or keep\(\) it/);
  assert.throws(() => T.zeros([2]).add(d), /was disposed/);
  const escaped = T.tidy(() => { const inner = T.ones([3]); return { sum: inner.sum().item(), leak: inner.add(0) }; });
  assert.equal(escaped.sum, 3);
  assert.equal(escaped.leak.isDisposed, false, "returned tensors survive the scope");
  let leaked: T.Tensor | undefined;
  T.tidy(() => { leaked = T.ones([3]); });
  assert.throws(() => leaked!.toArray(), /disposed/, "a tensor smuggled out of a scope is freed with it");
  escaped.leak.dispose();
});

test("creation errors: fromBytes size, tensor() count, negative shapes, bad options", () => {
  assert.throws(() => T.fromBytes(new Uint8Array(10), [3], "f32"), /^Error: fromBytes: 10 bytes given, but shape \[3\] of Float needs 12/);
  assert.throws(() => T.tensor([1, 2, 3], [2, 2]), /tensor\(\): 3 values do not fill shape \[2, 2\] \(4 needed\)/);
  assert.throws(() => T.zeros([-1, 2]), /full\(\): shape \[-1, 2\] must hold non-negative integers/);
  assert.throws(() => T.randn([2.5], new T.Generator(0)), /randn\(\): shape \[2.5\]/);
  assert.throws(() => T.dropout(T.zeros([2]), 1.5, new T.Generator(0)), /dropout probability must be in \[0, 1\), got 1.5/);
  assert.throws(() => T.setNumThreads(0), /thread count must be a positive integer, got 0/);
  assert.throws(() => new AdamW([], { lr: -1 }), /learning rate must be a non-negative number, got -1/);
  const p = T.keep(T.zeros([1]));
  assert.throws(() => new AdamW([["w", p], ["w", p]], { lr: 1 }), /parameter "w" is given to the optimizer twice/);
  p.dispose();
});

class Tiny extends Module {
  fc = this.child("fc", new Linear(3, 2));
  conv = this.child("conv", new Conv2d(2, 2, 1));
}

test("loadStateDict lists missing and unexpected names and rejects shape mismatches", () => {
  setInitSeed(3);
  const m = new Tiny();
  const sd = new Map(m.stateDict());
  const extra = T.keep(T.zeros([2]));
  sd.delete("conv.bias");
  sd.set("conv.bias_typo", extra);
  assert.throws(() => m.loadStateDict(sd, { source: "model.safetensors" }),
    /the checkpoint in model.safetensors does not match the model \(missing weights: conv.bias; unexpected weights: conv.bias_typo\)/);
  const lenient = m.loadStateDict(sd, { strict: false });
  assert.deepEqual(lenient, { missing: ["conv.bias"], unexpected: ["conv.bias_typo"] });
  const wrong = new Map(m.stateDict());
  const bad = T.keep(T.zeros([3, 3]));
  wrong.set("fc.weight", bad);
  assert.throws(() => m.loadStateDict(wrong, { source: "x.safetensors" }), /weight "fc.weight" in x.safetensors has shape \[3,3\] but the model expects \[2,3\]/);
  extra.dispose(); bad.dispose(); m.dispose();
});

test("loadStateDict copies values; deepCopy is independent of the original", () => {
  setInitSeed(4);
  const m = new Tiny();
  const before = m.parameters().map((p) => p.toFloat32Array());
  const copy = m.deepCopy();
  assert.deepEqual([...copy.stateDict().keys()], [...m.stateDict().keys()]);
  copy.parameters().forEach((p, i) => {
    assert.notEqual(p, m.parameters()[i]);
    assert.equal(p.requiresGrad, true);
    assert.deepEqual(p.toFloat32Array(), before[i]);
  });
  // Change the copy every way training would: in place, by an optimizer step, by loading weights.
  copy.fc.weight.fill_(7);
  const opt = new AdamW(copy.trainableParameters(), { lr: 0.1 });
  T.tidy(() => copy.conv.forward(T.ones([1, 2, 3, 3])).sum().backward());
  opt.step();
  assert.ok(copy.conv.weight.toFloat32Array().some((v, i) => v !== before[2]![i]), "the copy did change");
  m.parameters().forEach((p, i) => assert.deepEqual(p.toFloat32Array(), before[i], "the original is bit-identical"));
  assert.equal(m.conv.weight.grad, null, "the original got no gradient");
  // And loading the copy's weights into the original makes them equal, without sharing storage.
  m.loadStateDict(copy.stateDict());
  assert.deepEqual(m.fc.weight.toFloat32Array(), copy.fc.weight.toFloat32Array());
  copy.fc.weight.fill_(0);
  assert.ok(m.fc.weight.toFloat32Array().every((v) => v === 7));
  opt.dispose(); copy.dispose(); m.dispose();
});
