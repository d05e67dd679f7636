import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EMOJI_CATEGORIES, loadEmojiDataset, selectSplit, uint8ToTensor, type EmojiDataset } from "../../src/datasets/emoji.js";
import {
  alignmentAccuracy, alignmentReward, createAlignmentModel, loadAlignmentModel, saveAlignmentModel, trainAlignment,
} from "../../src/feedback/alignment.js";
import { defaultAlignmentDir, loadReward } from "../../src/feedback/registry.js";
import { noGrad, tidy } from "../../src/tensor/index.js";

const TINY = { channels: [8, 16], embedDim: 16, textWidth: 16, textLayers: 1 };

/** A small 16-px subset: the first `n` base emoji (no skin tones) of two categories. */
async function smallSet(n: number): Promise<EmojiDataset> {
  const all = await loadEmojiDataset({ split: "train", size: 16 });
  const cats = new Set([EMOJI_CATEGORIES.indexOf("Flags"), EMOJI_CATEGORIES.indexOf("Food & Drink")]);
  const idx = all.items.map((it, i) => [it, i] as const).filter(([it]) => cats.has(it.label) && it.name === it.baseName).map(([, i]) => i);
  const pick = [...idx.filter((i) => all.items[i]!.label === [...cats][0]).slice(0, n / 2), ...idx.filter((i) => all.items[i]!.label === [...cats][1]).slice(0, n / 2)];
  const per = 16 * 16 * 3;
  const pixels = new Uint8Array(pick.length * per);
  pick.forEach((i, j) => pixels.set(all.pixels.subarray(i * per, (i + 1) * per), j * per));
  return selectSplit({ ...all, items: pick.map((i) => all.items[i]!), pixels }, "all");
}

test("alignment loss is CLIP's symmetric InfoNCE, checked against a JS computation", async () => {
  const ds = await smallSet(6);
  const model = createAlignmentModel(ds.items.map((i) => i.caption), { ...TINY, imageSize: 16, seed: 3 });
  const captions = ds.items.map((i) => i.caption);
  const x = uint8ToTensor(ds.pixels, ds.items.length, 16);
  const { got, u, v, s } = noGrad(() => tidy(() => ({
    got: model.loss(x, captions).item(),
    u: model.encodeImages(x).toArray(),
    v: model.encodeTexts(captions).toArray(),
    s: model.scale().item(),
  })));
  const n = captions.length, d = 16;
  // embeddings are unit vectors
  for (let i = 0; i < n; i++) {
    let nu = 0, nv = 0;
    for (let k = 0; k < d; k++) { nu += u[i * d + k]! ** 2; nv += v[i * d + k]! ** 2; }
    assert.ok(Math.abs(nu - 1) < 1e-5 && Math.abs(nv - 1) < 1e-5);
  }
  assert.ok(Math.abs(s - 1 / 0.07) < 1e-3, "initial temperature 0.07 as CLIP");
  const L = (i: number, j: number) => { let z = 0; for (let k = 0; k < d; k++) z += u[i * d + k]! * v[j * d + k]!; return s * z; };
  let rows = 0, cols = 0;
  for (let i = 0; i < n; i++) {
    const lr = Math.log(Array.from({ length: n }, (_, j) => Math.exp(L(i, j))).reduce((a, b) => a + b));
    const lc = Math.log(Array.from({ length: n }, (_, j) => Math.exp(L(j, i))).reduce((a, b) => a + b));
    rows += lr - L(i, i);
    cols += lc - L(i, i);
  }
  assert.ok(Math.abs(got - (rows / n + cols / n) / 2) < 1e-4, `${got} vs ${(rows / n + cols / n) / 2}`);
  model.dispose();
  x.dispose();
});

test("alignment training learns a tiny set; the temperature is learned; save → load keeps scores", async () => {
  const ds = await smallSet(8);
  const losses: number[] = [];
  const scales: number[] = [];
  const model = trainAlignment({
    // 90 steps: the set is learnt (8/8 measured on OpenBLAS SkylakeX and Haswell kernels); at 30 steps
    // it was 6/8, exactly at the bound, so the bound below had no margin
    train: ds, steps: 90, batchSize: 8, lr: 5e-3, seed: 1, shift: 1, model: TINY,
    onEvent: (e) => { if (e.type === "step") { losses.push(e.loss); scales.push(e.scale); } },
  });
  const head = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
  const tail = losses.slice(-5).reduce((a, b) => a + b) / 5;
  assert.ok(tail < head * 0.7, `loss should fall: ${head.toFixed(3)} → ${tail.toFixed(3)}`);
  assert.notEqual(scales[scales.length - 1], scales[0], "logit scale is a trained parameter");
  const acc = alignmentAccuracy(model, ds);
  assert.ok(acc.randomWrong >= 0.75, `training-set ranking accuracy ${acc.randomWrong}`);
  assert.equal(acc.count, 8);

  const dir = mkdtempSync(join(tmpdir(), "reward-"));
  try {
    saveAlignmentModel(dir, model, { training: { steps: 40 } });
    const loaded = loadAlignmentModel(dir);
    const captions = ds.items.map((i) => i.caption);
    const a = model.scorePixels(ds.pixels, captions);
    const b = loaded.scorePixels(ds.pixels, captions);
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) < 1e-5));
    // through the registry (a folder path) and the RewardModel contract, at a larger image size
    const reward = loadReward(dir);
    assert.ok(reward.name.startsWith("reward-"));
    const img = { width: 16, height: 16, data: ds.pixels.slice(0, 16 * 16 * 3) };
    const [viaReward] = await reward.score([img], [captions[0]!]);
    assert.ok(Math.abs(viaReward! - a[0]!) < 1e-5);
    const big = { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3).fill(255) };
    assert.equal((await reward.score([big], ["x"])).length, 1);
    reward.dispose?.();
    loaded.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  model.dispose();
});

test("loading a folder that is not a reward folder fails with a clear message", () => {
  const dir = mkdtempSync(join(tmpdir(), "not-reward-"));
  try {
    assert.throws(() => loadAlignmentModel(dir), /not a reward folder .*reward train/);
    assert.throws(() => loadReward(dir), /not a reward folder/);
    assert.throws(() => loadReward("no-such-reward"), /unknown reward "no-such-reward": give one of alignment, appeal, category/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the shipped alignment reward ranks the true caption first for most held-out emoji (as its card says)", async () => {
  assert.ok(existsSync(join(defaultAlignmentDir(), "model.safetensors")), "models/emoji-reward ships with the package");
  const cfg = JSON.parse(readFileSync(join(defaultAlignmentDir(), "config.json"), "utf8")) as { training: { heldoutAccuracy: { randomWrong: number; sameCategoryWrong: number } } };
  const model = loadAlignmentModel(defaultAlignmentDir());
  const held = await loadEmojiDataset({ split: "heldout" });
  const acc = alignmentAccuracy(model, held);
  assert.ok(acc.randomWrong > 0.75, `random wrong caption: ${acc.randomWrong}`);
  assert.ok(acc.sameCategoryWrong > 0.6, `same-category wrong caption: ${acc.sameCategoryWrong}`);
  // the figures recorded at training time are reproduced exactly (same evaluation seed)
  assert.ok(Math.abs(acc.randomWrong - cfg.training.heldoutAccuracy.randomWrong) < 1e-9);
  assert.ok(Math.abs(acc.sameCategoryWrong - cfg.training.heldoutAccuracy.sameCategoryWrong) < 1e-9);
  const reward = alignmentReward(model);
  assert.match(reward.description, /s = \d/);
  // by name through the registry: the true caption outscores a wrong one on a held-out image
  const byName = loadReward("alignment");
  assert.equal(byName.name, "alignment");
  const img = { width: 32, height: 32, data: held.pixels.slice(0, 32 * 32 * 3) };
  const [t, w] = await byName.score([img, img], [held.items[0]!.caption, held.items[held.items.length - 1]!.caption]);
  assert.ok(Math.abs(t! - model.scorePixels(img.data, [held.items[0]!.caption])[0]!) < 1e-4);
  assert.ok(Number.isFinite(w!));
  byName.dispose?.();
  model.dispose();
});
