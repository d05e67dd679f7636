import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClipTokenizer, cleanClipText, defaultTokenizerAssetPath, saveTokenizerFolder } from "../../src/models/clip/tokenizer.js";

// Golden ids from scripts/golden/tokenizer/make_golden.py: an independent Python implementation
// of CLIP's BPE with transformers' no-ftfy cleaning.
interface GoldenCase {
  text: string;
  tokens: string[];
  ids: number[];
  batch77: number[];
  mask77: number[];
  batch77_pad0: number[];
  decoded: string;
}
const golden = JSON.parse(readFileSync(new URL("../golden/tokenizer/clip_golden.json", import.meta.url), "utf8")) as {
  vocab_size: number;
  bang_id: number;
  cases: GoldenCase[];
};

const tok = ClipTokenizer.fromFile();

test("the shipped merges file loads from the package assets with CLIP's vocabulary", () => {
  assert.ok(existsSync(defaultTokenizerAssetPath()));
  assert.ok(defaultTokenizerAssetPath().endsWith(join("assets", "tokenizer", "bpe_simple_vocab_16e6.txt.gz")));
  assert.equal(tok.vocabSize, golden.vocab_size);
  assert.equal(tok.vocabSize, 49408);
  assert.equal(tok.bosId, 49406);
  assert.equal(tok.eosId, 49407);
  assert.equal(tok.padId, 49407);
  assert.equal(tok.tokenToId("!"), golden.bang_id);
  assert.equal(tok.idToToken(49406), "<|startoftext|>");
  assert.equal(tok.modelMaxLength, 77);
});

test('"Hi there" encodes to [49406, 1883, 997, 49407]', () => {
  assert.deepEqual(tok.encode("Hi there"), [49406, 1883, 997, 49407]);
  assert.deepEqual(tok.tokenize("Hi there"), ["hi</w>", "there</w>"]);
  assert.deepEqual(tok.encode("Hi there", { addSpecialTokens: false }), [1883, 997]);
});

test("matches the independent Python tokenizer on every golden string", () => {
  assert.ok(golden.cases.length >= 30);
  for (const c of golden.cases) {
    const label = JSON.stringify(c.text.slice(0, 60));
    assert.deepEqual(tok.tokenize(c.text), c.tokens, `tokens of ${label}`);
    assert.deepEqual(tok.encode(c.text), c.ids, `ids of ${label}`);
    assert.equal(tok.decode(c.ids), c.decoded, `decode of ${label}`);
  }
});

test("encodeBatch pads to 77, truncates keeping the end token at position 76, and masks padding", () => {
  const texts = golden.cases.map((c) => c.text);
  const batch = tok.encodeBatch(texts);
  assert.deepEqual(batch.shape, [texts.length, 77]);
  golden.cases.forEach((c, i) => {
    assert.deepEqual(batch.ids[i], c.batch77, `row ${i}`);
    assert.deepEqual(batch.attentionMask[i], c.mask77, `mask ${i}`);
    assert.deepEqual([...batch.flat!.subarray(i * 77, (i + 1) * 77)], c.batch77);
  });
  const long = golden.cases.filter((c) => c.ids.length > 77);
  assert.ok(long.length >= 2, "golden set holds truncated prompts");
  for (const c of long) {
    const row = batch.ids[texts.indexOf(c.text)]!;
    assert.equal(row[76], 49407);
    assert.deepEqual(row.slice(0, 76), c.ids.slice(0, 76));
  }
  // SD 2.x pads with "!" (id 0)
  const sd2 = ClipTokenizer.fromFile(undefined, { padToken: "!" });
  assert.equal(sd2.padId, 0);
  const b2 = sd2.encodeBatch(texts);
  // Texts holding "!" are left out here: transformers splits the text at an added pad token "!"
  // (it becomes id 0, not BPE's "!</w>"), which the golden script does not model;
  // test/models/tokenizer-pad-split.test.ts checks that rule against transformers' own ids.
  golden.cases.forEach((c, i) => { if (!c.text.includes("!")) assert.deepEqual(b2.ids[i], c.batch77_pad0); });
  // other padding modes
  const longest = tok.encodeBatch(["a cat", "a photo of a dog"], { padding: "longest" });
  assert.deepEqual(longest.shape, [2, 7]);
  assert.deepEqual(longest.attentionMask[0], [1, 1, 1, 1, 0, 0, 0]);
  const none = tok.encodeBatch(["a cat", "a photo of a dog"], { padding: "none" });
  assert.equal(none.flat, undefined);
  assert.deepEqual(none.ids.map((r) => r.length), [4, 7]);
  const untruncated = tok.encodeBatch(["a ".repeat(100)], { truncation: false });
  assert.equal(untruncated.ids[0]!.length, 102);
  assert.throws(() => tok.encodeBatch(["x"], { maxLength: 1 }), /maxLength must be an integer ≥ 2/);
});

test("cleaning: control characters dropped, whitespace collapsed, CJK spaced, NFC, lowercase", () => {
  assert.equal(cleanClipText("  A\tB\n\nC\u00a0D\u3000E  "), "a b c d e");
  assert.equal(cleanClipText("x\u0000y\u0007z\ufffd\u200bw"), "xyzw");
  assert.equal(cleanClipText("東京"), "東 京");
  assert.equal(cleanClipText("e\u0301"), "\u00e9");
});

test("decode round-trips text the cleaning leaves unchanged, and can show special tokens", () => {
  for (const text of ["a photo of a cat", "naïve café", "🐱 emoji", "東 京"]) {
    assert.equal(tok.decode(tok.encode(text)).replaceAll(" ", ""), text.replaceAll(" ", ""));
  }
  assert.equal(tok.decode(tok.encode("hi there"), { skipSpecialTokens: false }), "<|startoftext|> hi there <|endoftext|>");
  // an emoji cut in the middle of its bytes decodes with a replacement character
  const ids = tok.encode("🀄", { addSpecialTokens: false });
  assert.ok(ids.length > 1);
  assert.equal(tok.decode(ids), "🀄");
  assert.match(tok.decode(ids.slice(0, 1)), /\ufffd/);
  assert.throws(() => tok.decode([49408]), /id 49408 is outside the vocabulary/);
});

test("saves and loads a diffusers tokenizer folder with identical encodings", () => {
  const dir = mkdtempSync(join(tmpdir(), "clip-tok-"));
  try {
    saveTokenizerFolder(tok, join(dir, "sd15"));
    for (const f of ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]) {
      assert.ok(existsSync(join(dir, "sd15", f)), f);
    }
    const vocab = JSON.parse(readFileSync(join(dir, "sd15", "vocab.json"), "utf8")) as Record<string, number>;
    assert.equal(vocab["<|endoftext|>"], 49407);
    assert.equal(vocab["hi</w>"], 1883);
    assert.ok(readFileSync(join(dir, "sd15", "merges.txt"), "utf8").startsWith("#version: 0.2\ni n\n"));
    const back = ClipTokenizer.fromFolder(join(dir, "sd15"));
    assert.equal(back.vocabSize, 49408);
    assert.equal(back.padId, 49407);
    for (const c of golden.cases) assert.deepEqual(back.encode(c.text), c.ids);
    // an SD 2 style folder: pad token "!" given as an AddedToken object, model_max_length from the config
    saveTokenizerFolder(tok, join(dir, "sd2"));
    const cfgPath = join(dir, "sd2", "tokenizer_config.json");
    const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>;
    cfg.pad_token = { __type: "AddedToken", content: "!", lstrip: false, rstrip: false };
    cfg.model_max_length = 64;
    writeFileSync(cfgPath, JSON.stringify(cfg));
    const sd2 = ClipTokenizer.fromFolder(join(dir, "sd2"));
    assert.equal(sd2.padId, 0);
    assert.equal(sd2.modelMaxLength, 64);
    assert.equal(sd2.encodeBatch(["a cat"]).ids[0]!.length, 64);
    assert.throws(() => ClipTokenizer.fromFolder(join(dir, "missing")), /vocab\.json is missing/);
    assert.throws(() => ClipTokenizer.fromFile(join(dir, "nope.gz")), /cannot read merges file .*nope\.gz/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
