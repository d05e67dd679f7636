import { test } from "node:test";
import assert from "node:assert/strict";
import { EMOJI_CATEGORIES, loadEmojiDataset, selectSplit } from "../../src/datasets/emoji.js";
import { classifyImages, crossEntropy, EmojiClassifier, scorePredictions, trainEmojiClassifier } from "../../src/feedback/emoji-classifier.js";
import { tensor } from "../../src/tensor/index.js";

test("cross-entropy matches −log softmax computed by hand", () => {
  const logits = [[2, 0, -1], [0.5, 0.5, 3]];
  const labels = [0, 2];
  const byHand = logits.map((row, i) => {
    const lse = Math.log(row.reduce((a, v) => a + Math.exp(v), 0));
    return lse - row[labels[i]!]!;
  });
  const got = crossEntropy(tensor(logits.flat(), [2, 3]), labels).item();
  assert.ok(Math.abs(got - (byHand[0]! + byHand[1]!) / 2) < 1e-6);
});

test("scores: accuracy, balanced accuracy and the confusion matrix", () => {
  // class 0: 3 of 4 right; class 1: 1 of 1; class 8: 0 of 1
  const r = scorePredictions([0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 8]);
  assert.equal(r.accuracy, 4 / 6);
  assert.ok(Math.abs(r.balancedAccuracy - (0.75 + 1 + 0) / 3) < 1e-12);
  assert.equal(r.confusion[0]![1], 1);
  assert.equal(r.confusion[8]![0], 1);
  assert.deepEqual(r.perCategory[EMOJI_CATEGORIES[0]], { correct: 3, total: 4 });
  assert.throws(() => scorePredictions([0], [0, 1]), /1 predictions for 2 labels/);
});

test("a short training run learns: loss falls and training accuracy beats chance", async () => {
  const all = await loadEmojiDataset({ split: "train", size: 16 });
  // two visually distinct categories, a few items each, at 16 px for speed
  const keep = new Set([EMOJI_CATEGORIES.indexOf("Flags"), EMOJI_CATEGORIES.indexOf("Smileys & Emotion")]);
  const idx = all.items.map((it, i) => [it, i] as const).filter(([it]) => keep.has(it.label)).map(([, i]) => i).filter((_, k) => k % 4 === 0);
  const per = 16 * 16 * 3;
  const pixels = new Uint8Array(idx.length * per);
  idx.forEach((i, j) => pixels.set(all.pixels.subarray(i * per, (i + 1) * per), j * per));
  const small = selectSplit({ ...all, items: idx.map((i) => all.items[i]!), pixels }, "all");
  const losses: number[] = [];
  const clf: EmojiClassifier = trainEmojiClassifier({ train: small, steps: 40, batchSize: 16, lr: 3e-3, seed: 1, onEvent: (e) => { if (e.type === "step") losses.push(e.loss); } });
  const head = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
  const tail = losses.slice(-5).reduce((a, b) => a + b) / 5;
  assert.ok(tail < head * 0.7, `loss ${head} → ${tail}`);
  const pred = classifyImages(clf, small.pixels, small.items.length, 16);
  const acc = scorePredictions(pred, small.items.map((i) => i.label)).accuracy;
  assert.ok(acc > 0.8, `training accuracy ${acc}`);
  clf.dispose();
});
