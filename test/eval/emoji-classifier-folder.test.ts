import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EMOJI_CATEGORIES } from "../../src/datasets/emoji.js";
import { EmojiClassifier, loadEmojiClassifier, saveEmojiClassifier } from "../../src/feedback/emoji-classifier.js";
import { setInitSeed } from "../../src/nn/index.js";
import { Generator, noGrad, randn } from "../../src/tensor/index.js";

test("saveEmojiClassifier → loadEmojiClassifier gives the same logits and config", () => {
  const dir = mkdtempSync(join(tmpdir(), "clf-"));
  try {
    setInitSeed(3);
    const m = new EmojiClassifier({ channels: [8, 8], numClasses: 9, imageSize: 8 }).eval();
    saveEmojiClassifier(dir, m, { steps: 7 });
    const { model, config } = loadEmojiClassifier(dir);
    assert.deepEqual(config.channels, [8, 8]);
    assert.deepEqual(config.classes, [...EMOJI_CATEGORIES]);
    assert.equal((config.training as { steps: number }).steps, 7);
    const x = randn([2, 3, 8, 8], new Generator(0));
    const [a, b] = noGrad(() => [m.forward(x).toArray() as number[], model.forward(x).toArray() as number[]]);
    assert.deepEqual(b, a);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loadEmojiClassifier names the folder and the files it needs", () => {
  const dir = mkdtempSync(join(tmpdir(), "clf-"));
  try {
    assert.throws(() => loadEmojiClassifier(dir), /config\.json and model\.safetensors/);
    writeFileSync(join(dir, "config.json"), "{}");
    writeFileSync(join(dir, "model.safetensors"), "");
    assert.throws(() => loadEmojiClassifier(dir), /"channels"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the shipped models/emoji-classifier loads with the 9 categories", () => {
  const { model, config } = loadEmojiClassifier("models/emoji-classifier");
  assert.deepEqual(config.classes, [...EMOJI_CATEGORIES]);
  const out = noGrad(() => model.forward(randn([1, 3, 32, 32], new Generator(1))));
  assert.deepEqual(out.shape, [1, 9]);
});
