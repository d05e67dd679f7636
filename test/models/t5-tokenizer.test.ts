// The legacy slow T5Tokenizer (SentencePiece unigram + </s> + padding) against the ids and pieces
// the real transformers / sentencepiece 0.1.97 produced in sd3-pipeline and flux-pipeline.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { T5Tokenizer } from "../../src/models/t5/tokenizer.js";
import { parseModelProto } from "../../src/models/t5/sentencepiece.js";
import { referenceCase } from "../_reference.js";

const cases: [string, string, string][] = [
  ["sd3-pipeline", "tokenizer_3", "input_ids_3"],
  ["flux-pipeline", "tokenizer_2", "input_ids_2"],
];

for (const [name, folder, idsName] of cases) {
  test(`${name}/${folder}: ids, pieces and untruncated lengths equal the recorded ones`, () => {
    const ref = referenceCase(name);
    const tok = T5Tokenizer.fromFolder(join(ref.dir, "pipeline", folder));
    assert.equal(tok.vocabSize, 1100); // len(tokenizer): 1000 pieces + 100 extra ids
    const values = ref.json.values as Record<string, unknown>;
    const prompts = [...(values.prompts as string[])];
    const rows = ref.entry(idsName).shape[0]!;
    if (rows === 3) prompts.push(""); // sd3: the negative prompt row
    const enc = tok.encode(prompts, values.max_sequence_length as number);
    const want = ref.array(idsName);
    assert.deepEqual(enc.ids.flat(), want);
    assert.deepEqual(enc.tokens, values[`${idsName}_tokens`]);
    assert.deepEqual(enc.untruncatedLengths, values[`${idsName}_untruncated_lengths`]);
  });
}

test("T5 tokenizer: the README's known examples and the special tokens", () => {
  const ref = referenceCase("sd3-pipeline");
  const tok = T5Tokenizer.fromFolder(join(ref.dir, "pipeline", "tokenizer_3"));
  assert.deepEqual(tok.encode(["A painting of a squirrel eating a burger"], 13).ids[0], [14, 29, 4, 5, 3, 188, 204, 34, 3, 529, 83, 91, 1]);
  assert.deepEqual(tok.encode([""], 3).ids[0], [1, 0, 0]);
  // extra ids: <extra_id_0> is the last id; their lstrip / rstrip eat the neighbouring spaces
  assert.deepEqual(tok.tokenize("a <extra_id_0> a").map((t) => t.id), [3, 1099, 3]);
  assert.deepEqual(tok.tokenize("<extra_id_99></s>").map((t) => t.id), [1000, 1]);
});

test("sentencepiece normaliser (nmt_nfkc charsmap): NFKC folds, whitespace rules, unknown characters merge", () => {
  const ref = referenceCase("sd3-pipeline");
  const tok = T5Tokenizer.fromFolder(join(ref.dir, "pipeline", "tokenizer_3"));
  const sp = tok.model;
  assert.equal(sp.proto.normalizer.name, "nmt_nfkc");
  // ligature, full-width letter, ideographic space, circled digit: NFKC; leading/trailing/double spaces dropped
  assert.equal(sp.normalize("  \ufb01 \uff28ello\u3000  w  "), "\u2581fi\u2581Hello\u2581w");
  assert.equal(sp.normalize("   "), "");
  // two characters absent from the 1,000 pieces (character_coverage covered PartiPrompts only) → one <unk>
  const unk = sp.encode("\u4e2d\u6587").filter((t) => t.id === 2);
  assert.equal(unk.length, 1);
  assert.equal(unk[0]!.piece, "\u4e2d\u6587");
});

test("parseModelProto: a hand-written ModelProto", () => {
  // pieces: <unk> (type 2), "▁a" score −1.5 (normal); trainer_spec model_type 1, unk_id 0; normalizer add_dummy_prefix
  const piece = (s: string, score: number, type: number) => {
    const b = Buffer.from(s, "utf8");
    const f = Buffer.alloc(4); f.writeFloatLE(score);
    const body = Buffer.concat([Buffer.from([0x0a, b.length]), b, Buffer.from([0x15]), f, Buffer.from([0x18, type])]);
    return Buffer.concat([Buffer.from([0x0a, body.length]), body]);
  };
  // trainer_spec: model_type (field 3) = 1, unk_id (field 40: two-byte tag 0xc0 0x02) = 0
  const trainer = Buffer.from([0x12, 0x05, 0x18, 0x01, 0xc0, 0x02, 0x00]);
  const normalizer = Buffer.from([0x1a, 0x02, 0x18, 0x01]);
  const proto = parseModelProto(new Uint8Array(Buffer.concat([piece("<unk>", 0, 2), piece("\u2581a", -1.5, 1), trainer, normalizer])));
  assert.equal(proto.pieces.length, 2);
  assert.equal(proto.pieces[1]!.piece, "\u2581a");
  assert.equal(proto.pieces[1]!.score, -1.5);
  assert.equal(proto.modelType, 1);
  assert.equal(proto.unkId, 0);
  assert.equal(proto.normalizer.addDummyPrefix, true);
});

test("SentencePiece encode equals the real sentencepiece 0.1.97 on 1,632 PartiPrompts and 29 hand-picked strings", async () => {
  const { readFileSync } = await import("node:fs");
  const { createHash } = await import("node:crypto");
  const golden = JSON.parse(readFileSync(new URL("../golden/models/t5_sentencepiece.json", import.meta.url), "utf8")) as {
    model_sha256: string; cases: { text: string; pieces: string[]; ids: number[] }[];
  };
  const path = join(referenceCase("sd3-pipeline").dir, "pipeline", "tokenizer_3", "spiece.model");
  assert.equal(createHash("sha256").update(readFileSync(path)).digest("hex"), golden.model_sha256);
  const sp = T5Tokenizer.fromFolder(join(referenceCase("sd3-pipeline").dir, "pipeline", "tokenizer_3")).model;
  const wrong = golden.cases.filter((c) => {
    const got = sp.encode(c.text);
    return JSON.stringify(got.map((t) => t.piece)) !== JSON.stringify(c.pieces) || JSON.stringify(got.map((t) => t.id)) !== JSON.stringify(c.ids);
  });
  assert.deepEqual(wrong.map((c) => c.text), [], `${wrong.length} of ${golden.cases.length} differ`);
});
