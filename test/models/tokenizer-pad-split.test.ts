// A CLIP tokenizer whose pad token is "!" (SD 2, SDXL's tokenizer_2, SD3's tokenizer_2) splits the
// text at "!" before BPE, as transformers' slow CLIPTokenizer does with an added special token:
// ids recorded by transformers 4.44 in ../shared/data/reference-models/sd3-pipeline
// (prompt 2 ends "… red dunes!": tokenizer → "!</w>" 256, tokenizer_2 → "!" 0).
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { referenceCase } from "../_reference.js";
import { ClipTokenizer } from "../../src/models/clip/tokenizer.js";

test("pad token '!': the text is split at '!' (transformers' ids for both SD3 CLIP tokenizers)", () => {
  const ref = referenceCase("sd3-pipeline");
  const dir = ref.pipelineFolder();
  try {
    const prompts = (ref.json.values as { prompts: string[] }).prompts;
    const rows = [...prompts, ""];
    const tok1 = ClipTokenizer.fromFolder(join(dir, "tokenizer"));
    const tok2 = ClipTokenizer.fromFolder(join(dir, "tokenizer_2"));
    assert.equal(tok2.padId, 0);
    assert.deepEqual(Array.from(tok1.encodeBatch(rows).flat!), ref.array("input_ids"));
    assert.deepEqual(Array.from(tok2.encodeBatch(rows).flat!), ref.array("input_ids_2"));
    // the difference is exactly the final "!" of prompt 2
    const a = tok1.encode(prompts[1]!);
    const b = tok2.encode(prompts[1]!);
    assert.deepEqual([a.at(-2), b.at(-2)], [256, 0]);
    // repeated and inner "!" as well
    assert.deepEqual(tok2.encode("wow!!a"), [tok2.bosId, ...tok2.encode("wow", { addSpecialTokens: false }), 0, 0, ...tok2.encode("a", { addSpecialTokens: false }), tok2.eosId]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
