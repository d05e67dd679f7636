// Bad SD3 / Flux / T5 / scheduler inputs fail with errors that name the file and the key.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { t5EncoderConfigFromJson } from "../../src/models/t5/encoder.js";
import { T5Tokenizer } from "../../src/models/t5/tokenizer.js";
import { parseModelProto } from "../../src/models/t5/sentencepiece.js";
import { sd3TransformerConfigFromJson } from "../../src/models/sd3/transformer.js";
import { fluxTransformerConfigFromJson } from "../../src/models/flux/transformer.js";
import { flowMatchConfigFromJson, flowSetTimesteps } from "../../src/diffusion/flow/scheduler.js";
import { loadSD3Pipeline } from "../../src/models/sd3/pipeline.js";
import { loadFluxPipeline } from "../../src/models/flux/pipeline.js";
import { readJsonObject } from "../../src/util/config-json.js";

test("config errors name the file and the key", () => {
  assert.throws(() => t5EncoderConfigFromJson({ feed_forward_proj: "gated-swish" }, "te3/config.json"), /te3\/config\.json: feed_forward_proj "gated-swish" is not supported/);
  assert.throws(() => t5EncoderConfigFromJson({ d_model: -1 }, "te3/config.json"), /te3\/config\.json: not a valid T5Config \(d_model: /);
  assert.throws(() => sd3TransformerConfigFromJson({ num_layers: 2, dual_attention_layers: [0, 2] }, "t/config.json"), /t\/config\.json: dual_attention_layers \[2\] are not block indices below num_layers 2/);
  assert.throws(() => sd3TransformerConfigFromJson({ caption_projection_dim: 100 }, "t/config.json"), /caption_projection_dim 100 must equal/);
  assert.throws(() => sd3TransformerConfigFromJson({ qk_norm: "layer_norm" }, "t/config.json"), /t\/config\.json: not a valid SD3Transformer2DModel config \(qk_norm: /);
  assert.throws(() => fluxTransformerConfigFromJson({ axes_dims_rope: [16, 56, 55] }, "f/config.json"), /f\/config\.json: axes_dims_rope \[16,56,55\] must be even and sum to attention_head_dim 128/);
  assert.throws(() => flowMatchConfigFromJson({ _class_name: "EulerDiscreteScheduler" }, "s.json"), /s\.json: _class_name "EulerDiscreteScheduler" is not FlowMatchEulerDiscreteScheduler/);
  assert.throws(() => flowSetTimesteps(flowMatchConfigFromJson({}), 0), /positive integer/);
  assert.throws(() => parseModelProto(new Uint8Array([0x08, 0x01]), "x.model"), /x\.model: no pieces found/);
});

test("folder errors: a missing spiece.model, a wrong pipeline class, bad JSON", () => {
  const dir = mkdtempSync(join(tmpdir(), "flow-err-"));
  try {
    assert.throws(() => T5Tokenizer.fromFolder(dir), /spiece\.model is missing/);
    writeFileSync(join(dir, "model_index.json"), JSON.stringify({ _class_name: "FluxPipeline" }));
    assert.throws(() => loadSD3Pipeline(dir), /_class_name is "FluxPipeline", expected "StableDiffusion3Pipeline"/);
    writeFileSync(join(dir, "model_index.json"), JSON.stringify({ _class_name: "StableDiffusion3Pipeline" }));
    assert.throws(() => loadFluxPipeline(dir), /expected "FluxPipeline"/);
    assert.throws(() => loadSD3Pipeline(dir), /transformer: .*config\.json is missing/);
    writeFileSync(join(dir, "bad.json"), "{");
    assert.throws(() => readJsonObject(join(dir, "bad.json"), "thing"), /thing: .*bad\.json is not valid JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
