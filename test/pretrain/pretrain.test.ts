import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hashInts } from "../../src/data/random.js";
import { NoiseSchedule } from "../../src/diffusion/schedule.js";
import { Conv2d, Embedding, Module, setInitSeed } from "../../src/nn/index.js";
import { applyEma, batchIndices, emaDecayAt, latestCheckpoint, pretrain, trainedParameters, type PretrainData, type PretrainEvent, type PretrainModel } from "../../src/train/pretrain.js";
import { Generator, cat, liveTensors, randint, randn, tensor, tidy, type Tensor } from "../../src/tensor/index.js";

/** A stand-in denoiser: two convs, a character-embedding "text encoder" added as a channel bias. */
class Toy extends Module {
  c1 = this.child("c1", new Conv2d(4, 8, 3, { padding: 1 }));
  c2 = this.child("c2", new Conv2d(8, 3, 3, { padding: 1 }));
  emb = this.child("emb", new Embedding(128, 8));
  encode(prompts: string[]): Tensor {
    return tidy(() => {
      const ids = prompts.map((p) => Array.from((p + " ").slice(0, 6).padEnd(6, " ")).map((c) => c.charCodeAt(0) % 128));
      return this.emb.forward(tensor(new BigInt64Array(ids.flat().map(BigInt)), [prompts.length, 6])).mean(1);
    });
  }
  forward(x: Tensor, t: Tensor, cond: Tensor): Tensor {
    return tidy(() => {
      const tt = t.to("f32").div(1000).reshape([-1, 1, 1, 1]).expand([x.shape[0]!, 1, x.shape[2]!, x.shape[3]!]);
      const h = this.c1.forward(cat4(x, tt)).add(cond.reshape([-1, 8, 1, 1])).silu();
      return this.c2.forward(h);
    });
  }
}
function cat4(x: Tensor, t: Tensor): Tensor { return cat([x, t], 1); }

function toyModel(seed = 0): { toy: Toy; model: PretrainModel } {
  setInitSeed(seed);
  const toy = new Toy();
  const schedule = new NoiseSchedule({ numTrainTimesteps: 1000, betaSchedule: "linear", betaStart: 1e-4, betaEnd: 0.02 });
  return { toy, model: { modules: { toy }, schedule, encodePrompts: (p) => toy.encode(p), predict: (x, t, c) => toy.forward(x, t, c) } };
}

function toyData(): PretrainData {
  const size = 8;
  const n = 6;
  const pixels = new Uint8Array(n * size * size * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 37 + (i >> 5) * 11) % 256;
  return { pixels, size, captions: ["red", "green", "blue", "cyan", "pink", "gray"] };
}

test("first-step loss is the mean squared error against ε for a model that outputs 0", () => {
  const { toy, model } = toyModel();
  const zeroModel: PretrainModel = { ...model, predict: (x) => x.mul(0).add(toy.c2.bias!.sum().mul(0)) };
  const events: PretrainEvent[] = [];
  pretrain({ model: zeroModel, data: toyData(), steps: 1, batchSize: 4, seed: 7, logEvery: 1, emaDecay: 0, onEvent: (e) => events.push(e) });
  const step = events.find((e) => e.type === "step");
  assert.ok(step && step.type === "step");
  // independent: the same torch generator stream, then mean(ε²)
  const gen = new Generator(hashInts(7, 0, 3));
  const expected = tidy(() => { randint(0, 1000, [4], gen); return randn([4, 3, 8, 8], gen).square().mean().item(); });
  assert.ok(Math.abs(step.loss - expected) < 1e-6, `${step.loss} vs ${expected}`);
  toy.dispose();
});

test("the loss falls, EMA follows the closed form, events and checkpoints are written", () => {
  const out = mkdtempSync(join(tmpdir(), "pretrain-"));
  try {
    const { toy, model } = toyModel();
    const before = new Map(trainedParameters(model).map(([n, p]) => [n, p.toFloat32Array()]));
    const events: PretrainEvent[] = [];
    const r = pretrain({ model, data: toyData(), steps: 60, batchSize: 6, lr: 2e-2, warmupSteps: 0, seed: 1, emaDecay: 0.9, logEvery: 10, out, checkpointEvery: 20, keepCheckpoints: 2, onEvent: (e) => events.push(e) });
    assert.equal(r.step, 60);
    const first = r.losses[0]![1];
    const last = r.losses[r.losses.length - 1]![1];
    assert.ok(last < 0.8 * first, `loss ${first} → ${last}`);
    assert.deepEqual(events.map((e) => e.type).filter((t) => t !== "step"), ["start", "checkpoint", "checkpoint", "checkpoint", "done"]);
    const steps = events.filter((e) => e.type === "step");
    assert.equal(steps.length, 6);
    for (const e of steps) {
      assert.ok(e.type === "step" && e.imagesPerSecond > 0 && e.etaSeconds >= 0 && Number.isFinite(e.loss));
    }
    // every parameter changed; EMA differs from the raw weights but is between-ish
    for (const [name, p] of trainedParameters(model)) {
      const a = before.get(name)!;
      const b = p.toFloat32Array();
      assert.ok(a.some((v, i) => v !== b[i]), `${name} did not change`);
    }
    assert.equal(readdirSync(join(out, "checkpoints")).length, 2);
    assert.equal(latestCheckpoint(out), join(out, "checkpoints", "step-000060"));
    for (const f of ["weights.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json"]) assert.ok(existsSync(join(out, "checkpoints", "step-000060", f)));
    applyEma(model, r.ema);
    for (const [name, p] of trainedParameters(model)) assert.deepEqual(p.toFloat32Array(), r.ema.get(name)!.toFloat32Array());
    for (const t of r.ema.values()) t.dispose();
    toy.dispose();

    // EMA after one step: d0 = min(0.9, 1/10) = 0.1 → ema = 0.1·θ0 + 0.9·θ1
    const { toy: toy2, model: m2 } = toyModel();
    const p0 = new Map(trainedParameters(m2).map(([n, p]) => [n, p.toFloat32Array()]));
    const r2 = pretrain({ model: m2, data: toyData(), steps: 1, batchSize: 2, lr: 1e-2, warmupSteps: 0, seed: 3, emaDecay: 0.9 });
    assert.equal(emaDecayAt(0, 0.9), 0.1);
    for (const [name, p] of trainedParameters(m2)) {
      const a = p0.get(name)!;
      const b = p.toFloat32Array();
      const e = r2.ema.get(name)!.toFloat32Array();
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(e[i]! - (0.1 * a[i]! + 0.9 * b[i]!)) < 1e-6);
    }
    for (const t of r2.ema.values()) t.dispose();
    toy2.dispose();
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("resume continues bit for bit; prompt dropout and weighted sampling behave", () => {
  const straightDir = mkdtempSync(join(tmpdir(), "pretrain-a-"));
  const resumedDir = mkdtempSync(join(tmpdir(), "pretrain-b-"));
  try {
    const common = { data: toyData(), steps: 8, batchSize: 3, lr: 1e-2, warmupSteps: 2, seed: 5, emaDecay: 0.95, logEvery: 2 };
    const a = toyModel();
    const ra = pretrain({ ...common, model: a.model, out: straightDir });
    const b = toyModel();
    let calls = 0;
    pretrain({ ...common, model: b.model, out: resumedDir, shouldStop: () => ++calls > 4 });
    assert.equal(latestCheckpoint(resumedDir), join(resumedDir, "checkpoints", "step-000004"));
    const c = toyModel(99); // different init: everything must come from the checkpoint
    const rc = pretrain({ ...common, model: c.model, out: resumedDir, resume: true });
    assert.equal(rc.step, 8);
    for (const [[name, pa], [, pc]] of trainedParameters(a.model).map((x, i) => [x, trainedParameters(c.model)[i]!] as const)) {
      assert.deepEqual(pc.toFloat32Array(), pa.toFloat32Array(), `${name} differs after resume`);
      assert.deepEqual(rc.ema.get(name)!.toFloat32Array(), ra.ema.get(name)!.toFloat32Array(), `EMA ${name} differs after resume`);
    }
    assert.deepEqual(rc.losses, ra.losses);
    for (const r of [ra, rc]) for (const t of r.ema.values()) t.dispose();
    for (const m of [a, b, c]) m.toy.dispose();
  } finally {
    rmSync(straightDir, { recursive: true, force: true });
    rmSync(resumedDir, { recursive: true, force: true });
  }
  // weighted sampling: item 1 has weight 3, items 0 and 2 weight 1 → frequencies 1/5, 3/5, 1/5
  const cum = new Float64Array([1, 4, 5]);
  const counts = [0, 0, 0];
  for (let s = 0; s < 200; s++) for (const i of batchIndices(0, s, 50, cum)) counts[i]!++;
  assert.ok(Math.abs(counts[1]! / 10000 - 0.6) < 0.02, `weighted counts ${counts}`);
  assert.deepEqual(batchIndices(4, 9, 5, cum), batchIndices(4, 9, 5, cum));
});

test("a run of steps keeps the live tensor count flat", () => {
  const { toy, model } = toyModel();
  const seen: number[] = [];
  pretrain({ model, data: toyData(), steps: 12, batchSize: 2, seed: 0, logEvery: 1, onEvent: (e) => { if (e.type === "step") seen.push(liveTensors()); } });
  assert.equal(seen[11], seen[1]);
  // prompt dropout: about half the captions become "" at p = 0.5; none at p = 0
  for (const p of [0.5, 0]) {
    const prompts: string[] = [];
    const spy: PretrainModel = { ...model, encodePrompts: (ps) => { prompts.push(...ps); return model.encodePrompts(ps); } };
    pretrain({ model: spy, data: toyData(), steps: 20, batchSize: 6, seed: 2, promptDropout: p, emaDecay: 0 }).ema.forEach((t) => t.dispose());
    const empty = prompts.filter((s) => s === "").length / prompts.length;
    if (p === 0) assert.equal(empty, 0);
    else assert.ok(empty > 0.35 && empty < 0.65, `dropped fraction ${empty}`);
  }
  toy.dispose();
});

test("pretrainModelFrom trains UNet and text encoder jointly; loadCheckpointWeights restores EMA weights", async () => {
  const { pretrainModelFrom, loadCheckpointWeights } = await import("../../src/train/pretrain.js");
  const { createTextToImageModel, disposeTextToImageModel } = await import("../../src/models/pipeline.js");
  const { TINY_UNET_CONFIG } = await import("../../src/models/unet/config.js");
  const { EMOJI_SCHEDULE, emojiTextConfig } = await import("../../src/datasets/emojiModel.js");
  const { pruneClipTokenizer } = await import("../../src/datasets/tokenizer.js");
  const tokenizer = pruneClipTokenizer(toyData().captions, { modelMaxLength: 8 });
  setInitSeed(0);
  const t2i = createTextToImageModel({ unet: { ...TINY_UNET_CONFIG, sampleSize: 8 }, textEncoder: emojiTextConfig(tokenizer), tokenizer, scheduler: EMOJI_SCHEDULE });
  const out = mkdtempSync(join(tmpdir(), "pretrain-t2i-"));
  try {
    const model = pretrainModelFrom(t2i);
    assert.deepEqual(Object.keys(model.modules), ["unet", "text_encoder"]);
    const tokEmb = () => t2i.textEncoder.text_model.embeddings.token_embedding.weight.toFloat32Array();
    const before = tokEmb();
    const r = pretrain({ model, data: toyData(), steps: 2, batchSize: 2, lr: 1e-2, warmupSteps: 0, out, emaDecay: 0.9 });
    assert.notDeepEqual(tokEmb(), before, "the text encoder did not learn");
    const emaTok = r.ema.get("text_encoder.text_model.embeddings.token_embedding.weight")!.toFloat32Array();
    loadCheckpointWeights(model, latestCheckpoint(out)!, "ema");
    assert.deepEqual(tokEmb(), emaTok);
    for (const t of r.ema.values()) t.dispose();
    assert.equal(Object.keys(pretrainModelFrom(t2i, { trainTextEncoder: false }).modules).join(), "unet");
  } finally {
    disposeTextToImageModel(t2i);
    rmSync(out, { recursive: true, force: true });
  }
});
