import { test } from "node:test";
import assert from "node:assert/strict";
import { listEmoji } from "../../src/datasets/emoji.js";
import { pruneClipTokenizer } from "../../src/datasets/tokenizer.js";
import { ClipTokenizer } from "../../src/models/clip/tokenizer.js";

test("the pruned tokenizer tokenizes its corpus exactly as CLIP's full tokenizer", () => {
  const items = listEmoji();
  const corpus = items.filter((i) => !i.heldout).map((i) => i.caption);
  const small = pruneClipTokenizer(corpus, { modelMaxLength: 32 });
  const full = ClipTokenizer.fromFile();
  assert.ok(small.vocabSize < 5000 && small.vocabSize > 514, `vocab ${small.vocabSize}`);
  for (const c of corpus.filter((_, i) => i % 7 === 0)) assert.deepEqual(small.tokenize(c), full.tokenize(c));
  // unseen text still round-trips through byte-level pieces
  for (const c of items.filter((i) => i.heldout).slice(0, 40).map((i) => i.caption).concat(["zebra quokka ✨"])) {
    assert.equal(small.decode(small.encode(c)), full.decode(full.encode(c)));
  }
  assert.equal(small.encode("grinning face")[0], small.bosId);
  const batch = small.encodeBatch(["grinning face"]);
  assert.equal(batch.shape![1], 32);
});
