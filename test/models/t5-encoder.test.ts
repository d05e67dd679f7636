// T5EncoderModel against the reference case t5-encoder (transformers 4.44, float32): relu and
// gated-gelu feed-forwards, with and without an attention mask.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { T5EncoderModel, relativePositionBuckets, t5EncoderConfigFromJson } from "../../src/models/t5/encoder.js";
import { readJsonObject } from "../../src/util/config-json.js";
import { noGrad } from "../../src/tensor/index.js";
import { assertClose, referenceCase } from "../_reference.js";

const ref = referenceCase("t5-encoder");

function load(folder: string): T5EncoderModel {
  const dir = join(ref.dir, folder);
  const config = t5EncoderConfigFromJson(readJsonObject(join(dir, "config.json"), "t5"), join(dir, "config.json"));
  const model = new T5EncoderModel(config);
  model.loadWeights([join(dir, "model.safetensors")]);
  return model.eval();
}

for (const folder of ["encoder_relu", "encoder_gated_gelu"]) {
  test(`t5-encoder ${folder}: last_hidden_state with and without the mask`, () => {
    const model = load(folder);
    assert.equal(model.config.isGated, folder === "encoder_gated_gelu");
    const ids = ref.tensor("input_ids");
    noGrad(() => {
      // measured: relu 2.8e-7 / 2.8e-7, gated-gelu 3.6e-7 / 2.7e-7 (no mask / mask)
      const e1 = assertClose(model.forward(ids), ref.tensor(`${folder}_last_hidden_state`), 1e-5, `${folder} no mask`);
      const e2 = assertClose(model.forward(ids, ref.tensor("attention_mask")), ref.tensor(`${folder}_last_hidden_state_masked`), 1e-5, `${folder} masked`);
      console.log(`${folder}: relative error ${e1.toExponential(2)} (no mask), ${e2.toExponential(2)} (mask)`);
    });
    model.dispose();
  });
}

test("relative position buckets: T5's bidirectional rule by hand", () => {
  // 32 buckets, max distance 128: 16 per side, exact below 8, log-spaced 8..15 up to 128
  const b = relativePositionBuckets(200, 32, 128).toArray();
  const at = (q: number, k: number) => b[q * 200 + k];
  assert.equal(at(0, 0), 0);
  assert.equal(at(5, 4), 1); // key one before: left side, exact
  assert.equal(at(4, 5), 17); // key one after: right side (16 + 1)
  assert.equal(at(0, 8), 16 + 8); // first log bucket: 8 + floor(log(1)/log(16)·8) = 8
  assert.equal(at(0, 12), 16 + 8 + Math.floor(Math.log(12 / 8) / Math.log(16) * 8));
  assert.equal(at(0, 199), 31); // beyond max distance: the last bucket
  assert.equal(at(199, 0), 15);
});
