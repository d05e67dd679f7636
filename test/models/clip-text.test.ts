import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  ClipTextModel, TINY_CLIP_TEXT_CONFIG, clipTextConfigFromJson, clipTextConfigToJson, type ClipTextConfig,
} from "../../src/models/clip/text-model.js";
import { Generator, getDefaultDevice, noGrad, randn, setDefaultDevice, tensor, tidy, liveTensors, type Tensor } from "../../src/tensor/index.js";
import type { Module } from "../../src/nn/module.js";

interface Case {
  config: Record<string, unknown>;
  with_projection: boolean;
  ids: number[][];
  names: [string, number[]][];
  last_hidden_first8: number[];
  last_hidden_sum: number;
  last_hidden_abs_sum: number;
  pooled: number[];
  text_embeds?: number[];
  penultimate_sum: number;
  penultimate_abs_sum: number;
  num_hidden_states: number;
}
const golden = JSON.parse(readFileSync(new URL("../golden/models/clip_text.json", import.meta.url), "utf8")) as {
  cases: Record<string, Case>;
  sd15: { config: Record<string, unknown>; names: [string, number[]][] };
};

/** The deterministic weights of scripts/golden/models/clip_text.py (fill_weights). */
function fillGoldenWeights(model: Module): void {
  const params = new Map(model.namedParameters());
  const names = [...params.keys()].sort();
  const state = new Map<string, Tensor>();
  names.forEach((name, i) => {
    const shape = params.get(name)!.shape;
    const r = randn(shape, new Generator(1000 + i));
    let w: Tensor;
    if (shape.length >= 2) w = r.div(Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1)));
    else if (name.includes("norm") && name.endsWith("weight")) w = r.mul(0.1).add(1);
    else w = r.mul(0.1);
    state.set(name, w);
  });
  model.loadStateDict(state);
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  assert.ok(worst <= tol, `${what}: max abs difference ${worst} > ${tol}`);
}

function sumOf(t: Tensor): number {
  return t.toFloat64Array().reduce((a, b) => a + b, 0);
}
function absSumOf(t: Tensor): number {
  return t.toFloat64Array().reduce((a, b) => a + Math.abs(b), 0);
}

for (const [name, c] of Object.entries(golden.cases)) {
  test(`CLIP text model ${name}: parameter names and shapes match transformers' CLIPTextModel`, () => {
    const config = clipTextConfigFromJson(c.config);
    const model = new ClipTextModel(config, { withProjection: c.with_projection });
    const ours = [...model.stateDict()].map(([n, t]) => [n, t.shape] as [string, number[]]);
    assert.deepEqual(ours, c.names);
    model.dispose();
  });

  test(`CLIP text model ${name}: outputs match the PyTorch transcription`, () => {
    const config = clipTextConfigFromJson(c.config);
    const model = new ClipTextModel(config, { withProjection: c.with_projection }).eval();
    fillGoldenWeights(model);
    const before = liveTensors();
    tidy(() => noGrad(() => {
      const ids = tensor(new BigInt64Array(c.ids.flat().map(BigInt)), [c.ids.length, c.ids[0]!.length]);
      const out = model.forward(ids, { outputHiddenStates: true });
      assert.deepEqual(out.lastHiddenState.shape, [3, 77, config.hiddenSize]);
      assertClose(out.lastHiddenState.slice(1, 0, 8).toFloat32Array(), c.last_hidden_first8, 1e-4, "last hidden [:, :8]");
      assert.ok(Math.abs(sumOf(out.lastHiddenState) - c.last_hidden_sum) < 1e-2, "last hidden sum");
      assert.ok(Math.abs(absSumOf(out.lastHiddenState) - c.last_hidden_abs_sum) < 1e-2, "last hidden abs sum");
      assertClose(out.pooled.toFloat32Array(), c.pooled, 1e-4, "pooled");
      if (c.text_embeds) assertClose(out.textEmbeds!.toFloat32Array(), c.text_embeds, 1e-4, "text_embeds");
      else assert.equal(out.textEmbeds, undefined);
      assert.equal(out.hiddenStates!.length, c.num_hidden_states);
      const penultimate = out.hiddenStates![out.hiddenStates!.length - 2]!;
      assert.ok(Math.abs(sumOf(penultimate) - c.penultimate_sum) < 1e-2, "penultimate sum");
      assert.ok(Math.abs(absSumOf(penultimate) - c.penultimate_abs_sum) < 1e-2, "penultimate abs sum");
    }));
    assert.equal(liveTensors(), before, "forward leaked tensors outside tidy");
    model.dispose();
  });
}

test("CLIP text model: Stable Diffusion 1.x's text encoder (CLIP ViT-L/14) has the checkpoint's 196 names and shapes", () => {
  const previous = getDefaultDevice();
  setDefaultDevice("meta"); // names and shapes only, no weight memory
  try {
    const model = new ClipTextModel(clipTextConfigFromJson(golden.sd15.config));
    const ours = [...model.stateDict()].map(([n, t]) => [n, t.shape]);
    assert.equal(ours.length, 196);
    assert.deepEqual(ours, golden.sd15.names);
    assert.equal(model.numParameters(), 123_060_480); // CLIP ViT-L/14 text tower
    model.dispose();
  } finally {
    setDefaultDevice(previous);
  }
});

test("CLIP text model: the pooled row is the end-of-text position under both eos rules", () => {
  // Row 0 ends at position 3; row 1 has neither start- nor end-of-text token.
  const base: ClipTextConfig = { ...TINY_CLIP_TEXT_CONFIG, numHiddenLayers: 1 };
  const modern = new ClipTextModel(base).eval();
  const legacy = new ClipTextModel({ ...base, eosTokenId: 2 }).eval();
  legacy.loadStateDict(modern.stateDict());
  tidy(() => noGrad(() => {
    const ids = tensor(new BigInt64Array([49406n, 320n, 1125n, 49407n, 0n, 0n, 5n, 9n, 45000n, 8n, 7n, 6n]), [2, 6]);
    const a = modern.forward(ids);
    const b = legacy.forward(ids);
    const last = a.lastHiddenState;
    // modern rule: first position of 49407 (row 0 → 3; row 1 → none, argmax of zeros → 0)
    assertClose(a.pooled.slice(0, 0, 1).toFloat32Array(), last.slice(0, 0, 1).slice(1, 3, 4).toFloat32Array(), 0, "row 0 modern");
    assertClose(a.pooled.slice(0, 1, 2).toFloat32Array(), last.slice(0, 1, 2).slice(1, 0, 1).toFloat32Array(), 0, "row 1 modern");
    // legacy eos_token_id 2: argmax of the ids (row 0 → 3; row 1 → position of 45000 = 2)
    assertClose(b.pooled.slice(0, 0, 1).toFloat32Array(), last.slice(0, 0, 1).slice(1, 3, 4).toFloat32Array(), 0, "row 0 legacy");
    assertClose(b.pooled.slice(0, 1, 2).toFloat32Array(), last.slice(0, 1, 2).slice(1, 2, 3).toFloat32Array(), 0, "row 1 legacy");
  }));
  modern.dispose();
  legacy.dispose();
});

test("CLIP text model: causal mask — changing a later token leaves earlier positions unchanged", () => {
  const model = new ClipTextModel({ ...TINY_CLIP_TEXT_CONFIG, numHiddenLayers: 1 }).eval();
  tidy(() => noGrad(() => {
    const a = model.forward(tensor(new BigInt64Array([49406n, 10n, 20n, 30n, 49407n]), [1, 5])).lastHiddenState;
    const b = model.forward(tensor(new BigInt64Array([49406n, 10n, 20n, 31n, 49407n]), [1, 5])).lastHiddenState;
    assertClose(a.slice(1, 0, 3).toFloat32Array(), b.slice(1, 0, 3).toFloat32Array(), 0, "positions before the change");
    const diff = a.slice(1, 3, 5).sub(b.slice(1, 3, 5)).abs().amax().item();
    assert.ok(diff > 1e-4, "positions from the change on must differ");
  }));
  model.dispose();
});

test("CLIP text config: json round trip, defaults, clear errors", () => {
  const json = clipTextConfigToJson(TINY_CLIP_TEXT_CONFIG, true);
  assert.equal(json.hidden_size, 64);
  assert.deepEqual(json.architectures, ["CLIPTextModelWithProjection"]);
  assert.deepEqual(clipTextConfigFromJson(JSON.parse(JSON.stringify(json))), TINY_CLIP_TEXT_CONFIG);
  // SD1.5's text_encoder/config.json (unknown keys such as _name_or_path are ignored).
  const sd15 = clipTextConfigFromJson({
    _name_or_path: "openai/clip-vit-large-patch14", architectures: ["CLIPTextModel"], bos_token_id: 0, eos_token_id: 2,
    hidden_act: "quick_gelu", hidden_size: 768, intermediate_size: 3072, layer_norm_eps: 1e-5, max_position_embeddings: 77,
    model_type: "clip_text_model", num_attention_heads: 12, num_hidden_layers: 12, pad_token_id: 1, projection_dim: 768,
    torch_dtype: "float32", transformers_version: "4.22.0.dev0", vocab_size: 49408,
  });
  assert.equal(sd15.hiddenSize, 768);
  assert.equal(sd15.eosTokenId, 2);
  assert.throws(() => clipTextConfigFromJson({ hidden_act: "relu" }, "x/config.json"), /x\/config\.json.*hidden_act/);
  assert.throws(() => clipTextConfigFromJson({ hidden_size: 65, num_attention_heads: 4 }), /not divisible/);
});

test("CLIP text model: legacy position_ids in a checkpoint are ignored; other extra or missing names are listed", () => {
  const model = new ClipTextModel({ ...TINY_CLIP_TEXT_CONFIG, numHiddenLayers: 1 });
  const state = new Map(model.stateDict());
  state.set("text_model.embeddings.position_ids", tensor(new BigInt64Array(77).map((_, i) => BigInt(i)), [1, 77]));
  assert.deepEqual(model.loadStateDict(state, { source: "text_encoder/model.safetensors" }), { missing: [], unexpected: [] });
  state.delete("text_model.final_layer_norm.bias");
  state.set("text_model.encoder.layers.1.mlp.fc1.weight", tensor([1]));
  assert.throws(
    () => model.loadStateDict(state, { source: "text_encoder/model.safetensors" }),
    (e: Error) => /text_encoder\/model\.safetensors/.test(e.message)
      && /missing weights: text_model\.final_layer_norm\.bias/.test(e.message)
      && /unexpected weights: text_model\.encoder\.layers\.1\.mlp\.fc1\.weight/.test(e.message),
  );
  model.dispose();
});
