// The ownership rule (tidy scopes per step, keep() for long-lived tensors, dispose()) holds native
// memory flat over a training run, and native memory is reported to V8.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Generator, dispose, keep, liveTensorBytes, liveTensors, mseLoss, randn, reportedExternalMemory, setNumThreads, tidy, zeros, type Tensor,
} from "../../src/tensor/index.js";
import { Conv2d, GroupNorm, Module, setInitSeed } from "../../src/nn/index.js";
import { AdamW, clipGradNorm } from "../../src/optim/index.js";

class SmallNet extends Module {
  conv1 = this.child("conv1", new Conv2d(3, 8, 3, { padding: 1 }));
  norm = this.child("norm", new GroupNorm(4, 8));
  conv2 = this.child("conv2", new Conv2d(8, 3, 3, { padding: 1 }));
  forward(x: Tensor): Tensor {
    return this.conv2.forward(this.norm.forward(this.conv1.forward(x)).silu());
  }
}

test("100 training steps (forward, backward, clip, AdamW) keep live tensor count and bytes flat", () => {
  setNumThreads(1); // tiny tensors: threads only add contention on a shared machine
  setInitSeed(1);
  const startCount = liveTensors();
  const net = new SmallNet();
  const opt = new AdamW(net.trainableParameters(), { lr: 1e-3 });
  const gen = new Generator(5);
  const x = keep(randn([4, 3, 8, 8], gen));
  const target = keep(randn([4, 3, 8, 8], gen));
  const at: { count: number; bytes: number; loss: number }[] = [];
  for (let step = 1; step <= 100; step++) {
    const loss = tidy(() => {
      opt.zeroGrad();
      const l = mseLoss(net.forward(x), target);
      l.backward();
      clipGradNorm(net.parameters(), 1.0);
      opt.step();
      return l.item();
    });
    if (step === 1 || step === 100) at.push({ count: liveTensors(), bytes: liveTensorBytes(), loss });
  }
  const [first, last] = at as [typeof at[0], typeof at[0]];
  assert.equal(last.count, first.count, `live tensors: ${first.count} after step 1, ${last.count} after step 100`);
  assert.equal(last.bytes, first.bytes, `live bytes: ${first.bytes} after step 1, ${last.bytes} after step 100`);
  assert.ok(last.loss < first.loss, `training should lower the loss (${first.loss} → ${last.loss})`);
  // params (4 + 2) + AdamW moments (2 per param) + x + target
  assert.equal(first.count - startCount, 6 + 12 + 2);
  opt.dispose();
  net.dispose();
  dispose([x, target]);
  assert.equal(liveTensors(), startCount, "disposing the model, optimizer and data frees everything");
});

test("tidy frees intermediates, returns nested results to the parent scope, and frees on throw", () => {
  const start = liveTensors();
  const kept = tidy(() => {
    const a = zeros([3]);
    const b = a.add(1);
    const inner = tidy(() => ({ list: [b.mul(2), b.mul(3)], map: new Map([["k", b.mul(4)]]) }));
    assert.equal(liveTensors(), start + 5, "inner scope returned 3 tensors, a and b are still live");
    return inner;
  });
  assert.equal(liveTensors(), start + 3);
  assert.deepEqual(kept.list[1]!.toArray(), [3, 3, 3]);
  dispose(kept);
  assert.equal(liveTensors(), start);
  assert.throws(() => tidy(() => { zeros([5]); throw new Error("boom"); }), /boom/);
  assert.equal(liveTensors(), start, "a throwing scope frees what it made");
  assert.throws(() => tidy(() => Promise.resolve(zeros([1])) as unknown as Tensor), /tidy\(\) takes a synchronous function/);
  assert.equal(liveTensors(), start);
});

test("native memory is reported to V8 as external memory", () => {
  // (process.memoryUsage().external counts only ArrayBuffers in this V8; the isolate's own
  // external total is what steers the garbage collector.)
  const before = reportedExternalMemory();
  const big = zeros([16, 1024, 1024]); // 64 MiB
  const during = reportedExternalMemory();
  big.dispose();
  const after = reportedExternalMemory();
  assert.ok(during - before >= 60 * 2 ** 20, `external grew by ${(during - before) / 2 ** 20} MiB for a 64 MiB tensor`);
  assert.ok(during - after >= 60 * 2 ** 20, `external shrank by ${(during - after) / 2 ** 20} MiB after dispose`);
});
