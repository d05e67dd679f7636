import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EMOJI_CATEGORIES, uint8ToTensor } from "../../src/datasets/emoji.js";
import { EmojiClassifier, saveEmojiClassifier } from "../../src/feedback/emoji-classifier.js";
import { categoryReward, loadClassifierWeights, promptCategory } from "../../src/feedback/category.js";
import { loadReward } from "../../src/feedback/registry.js";
import { setInitSeed } from "../../src/nn/index.js";
import { noGrad, tidy } from "../../src/tensor/index.js";

test("promptCategory: the caption's last part, else the emoji name", () => {
  assert.equal(promptCategory("grinning face, face smiling, smileys & emotion"), EMOJI_CATEGORIES.indexOf("Smileys & Emotion"));
  assert.equal(promptCategory("Something Odd, Flags"), EMOJI_CATEGORIES.indexOf("Flags"));
  assert.equal(promptCategory("grinning face"), EMOJI_CATEGORIES.indexOf("Smileys & Emotion"));
  assert.equal(promptCategory("slice of pizza, with extra words"), EMOJI_CATEGORIES.indexOf("Food & Drink"));
  assert.equal(promptCategory("a photograph of an astronaut riding a horse"), null);
});

test("category reward = log softmax of the classifier's logits at the prompt's category", async () => {
  setInitSeed(5);
  const clf = new EmojiClassifier({ channels: [8, 16], numClasses: 9, imageSize: 8 });
  const dir = mkdtempSync(join(tmpdir(), "clf-"));
  try {
    saveEmojiClassifier(dir, clf);
    const loaded = loadClassifierWeights(dir);
    const reward = categoryReward(loaded);
    const rng = (i: number) => (i * 2654435761) % 256;
    const img = { width: 8, height: 8, data: Uint8Array.from({ length: 8 * 8 * 3 }, (_, i) => rng(i)) };
    const prompts = ["slice of pizza, food prepared, food & drink", "grinning face"];
    const scores = await reward.score([img, img], prompts);
    const logits = noGrad(() => tidy(() => clf.forward(uint8ToTensor(img.data, 1, 8)).toArray()));
    const lse = Math.log(logits.reduce((a, z) => a + Math.exp(z), 0));
    assert.ok(Math.abs(scores[0]! - (logits[EMOJI_CATEGORIES.indexOf("Food & Drink")]! - lse)) < 1e-5);
    assert.ok(Math.abs(scores[1]! - (logits[EMOJI_CATEGORIES.indexOf("Smileys & Emotion")]! - lse)) < 1e-5);
    await assert.rejects(reward.score([img], ["an astronaut"]), /names no emoji category/);
    // the shipped classifier through its name
    const shipped = loadReward("category");
    const [s0] = await shipped.score([img], [prompts[0]!]);
    assert.ok(s0! < 0 && Number.isFinite(s0!), "a log-probability");
    shipped.dispose?.();
    // a folder path through the registry gives the same reward, named after the folder
    const viaRegistry = loadReward(dir);
    assert.equal(viaRegistry.name, dir.split("/").pop());
    assert.deepEqual(await viaRegistry.score([img], [prompts[0]!]), [scores[0]]);
    viaRegistry.dispose?.();
    reward.dispose?.();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  clf.dispose();
});
