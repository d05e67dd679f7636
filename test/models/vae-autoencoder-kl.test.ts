import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  AutoencoderKL, DiagonalGaussian, TINY_AUTOENCODER_KL_CONFIG, SD_AUTOENCODER_KL_CONFIG,
  autoencoderKLConfigFromJson, autoencoderKLConfigToJson, convertLegacyVaeStateDict, vaeScaleFactor,
} from "../../src/models/vae/autoencoder-kl.js";
import { Generator, cat, getDefaultDevice, liveTensors, noGrad, rand, randn, setDefaultDevice, tidy, type Tensor } from "../../src/tensor/index.js";
import type { Module } from "../../src/nn/module.js";

interface Stats { sum: number; abs_sum: number; shape: number[] }
interface Case {
  config: Record<string, unknown>;
  size: number;
  names: [string, number[]][];
  mean_first_channel: number[];
  mean: Stats;
  logvar: Stats;
  sample: Stats;
  sample_corner: number[];
  decoded_corner: number[];
  decoded: Stats;
  kl: number[];
}
const golden = JSON.parse(readFileSync(new URL("../golden/models/vae_autoencoder_kl.json", import.meta.url), "utf8")) as {
  cases: Record<string, Case>;
  sd: { config: Record<string, unknown>; names: [string, number[]][]; num_parameters: number };
};

/** The deterministic weights of scripts/golden/models/vae_autoencoder_kl.py (fill_weights). */
function fillGoldenWeights(model: Module): void {
  const params = new Map(model.namedParameters());
  const state = new Map<string, Tensor>();
  [...params.keys()].sort().forEach((name, i) => {
    const shape = params.get(name)!.shape;
    const r = randn(shape, new Generator(1000 + i));
    if (shape.length >= 2) state.set(name, r.div(Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1))));
    else if (name.includes("norm") && name.endsWith("weight")) state.set(name, r.mul(0.1).add(1));
    else state.set(name, r.mul(0.1));
  });
  model.loadStateDict(state);
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  assert.ok(worst <= tol, `${what}: max abs difference ${worst} > ${tol}`);
}
function assertStats(t: Tensor, s: Stats, tol: number, what: string): void {
  assert.deepEqual(t.shape, s.shape, `${what}: shape`);
  const v = t.toFloat64Array();
  const sum = v.reduce((a, b) => a + b, 0);
  const abs = v.reduce((a, b) => a + Math.abs(b), 0);
  assert.ok(Math.abs(sum - s.sum) <= tol * Math.max(1, Math.abs(s.abs_sum)), `${what}: sum ${sum} vs ${s.sum}`);
  assert.ok(Math.abs(abs - s.abs_sum) <= tol * Math.max(1, s.abs_sum), `${what}: abs sum ${abs} vs ${s.abs_sum}`);
}

for (const [name, c] of Object.entries(golden.cases)) {
  test(`AutoencoderKL ${name}: parameter names and shapes match diffusers' AutoencoderKL`, () => {
    const model = new AutoencoderKL(autoencoderKLConfigFromJson(c.config));
    assert.deepEqual([...model.stateDict()].map(([n, t]) => [n, t.shape]), c.names);
    model.dispose();
  });

  test(`AutoencoderKL ${name}: encode (mean, logvar, sample, KL) and decode match the PyTorch transcription`, () => {
    const model = new AutoencoderKL(autoencoderKLConfigFromJson(c.config)).eval();
    fillGoldenWeights(model);
    const before = liveTensors();
    tidy(() => noGrad(() => {
      const x = rand([2, model.config.inChannels, c.size, c.size], new Generator(7)).mul(2).sub(1);
      const posterior = model.encode(x);
      assertClose(posterior.mean.slice(1, 0, 1).toFloat32Array(), c.mean_first_channel, 1e-4, "posterior mean [:, 0]");
      assertStats(posterior.mean, c.mean, 1e-5, "mean");
      assertStats(posterior.logvar, c.logvar, 1e-5, "logvar");
      const sample = posterior.sample(new Generator(11));
      assertStats(sample, c.sample, 1e-5, "sample");
      assertClose(sample.slice(2, 0, 3).slice(3, 0, 3).toFloat32Array(), c.sample_corner, 1e-4, "sample corner");
      assertClose(posterior.kl().toFloat32Array(), c.kl, 1e-3, "kl");
      const decoded = model.decode(posterior.mode());
      assertClose(decoded.slice(2, 0, 4).slice(3, 0, 4).toFloat32Array(), c.decoded_corner, 1e-4, "decoded corner");
      assertStats(decoded, c.decoded, 1e-5, "decoded");
    }));
    assert.equal(liveTensors(), before, "encode/decode leaked tensors outside tidy");
    model.dispose();
  });
}

test("AutoencoderKL: Stable Diffusion's VAE config has the checkpoint's 248 names and shapes", () => {
  const previous = getDefaultDevice();
  setDefaultDevice("meta"); // names and shapes only, no weight memory
  try {
    const model = new AutoencoderKL(autoencoderKLConfigFromJson(golden.sd.config));
    assert.deepEqual(model.config, SD_AUTOENCODER_KL_CONFIG);
    const ours = [...model.stateDict()].map(([n, t]) => [n, t.shape]);
    assert.equal(ours.length, 248);
    assert.deepEqual(ours, golden.sd.names);
    assert.equal(model.numParameters(), golden.sd.num_parameters);
    model.dispose();
  } finally {
    setDefaultDevice(previous);
  }
});

test("AutoencoderKL: legacy attention names (query/key/value/proj_attn, 1×1-conv shaped) load as the current ones", () => {
  const source = new AutoencoderKL(TINY_AUTOENCODER_KL_CONFIG).eval();
  const target = new AutoencoderKL(TINY_AUTOENCODER_KL_CONFIG).eval();
  const legacy = new Map<string, Tensor>();
  const rename: Record<string, string> = { to_q: "query", to_k: "key", to_v: "value", "to_out.0": "proj_attn" };
  for (const [n, t] of source.stateDict()) {
    const m = /^(.*\.attentions\.0)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(n);
    if (!m) { legacy.set(n, t); continue; }
    const value = m[3] === "weight" && m[2] === "to_k" ? t.reshape([...t.shape, 1, 1]) : t; // one as an old 1×1 conv
    legacy.set(`${m[1]}.${rename[m[2]!]}.${m[3]}`, value);
  }
  assert.ok(legacy.has("encoder.mid_block.attentions.0.query.weight"));
  assert.ok(legacy.has("decoder.mid_block.attentions.0.proj_attn.bias"));
  const converted = convertLegacyVaeStateDict(legacy);
  assert.equal(converted.renamed.length, 16);
  assert.deepEqual([...converted.state.keys()].sort(), [...source.stateDict().keys()].sort());
  target.loadStateDict(legacy, { source: "vae/diffusion_pytorch_model.safetensors" });
  tidy(() => noGrad(() => {
    const x = rand([1, 3, 16, 16], new Generator(3));
    const a = source.forward(x);
    const b = target.forward(x);
    assert.equal(a.sub(b).abs().amax().item(), 0);
  }));
  // both spellings at once is ambiguous
  legacy.set("encoder.mid_block.attentions.0.to_q.weight", source.encoder.mid_block.attentions!.at(0).to_q.weight);
  assert.throws(() => target.loadStateDict(legacy), /both the legacy "encoder\.mid_block\.attentions\.0\.query\.weight" and the current/);
  source.dispose();
  target.dispose();
});

test("AutoencoderKL: missing and unexpected weights are listed with the file", () => {
  const model = new AutoencoderKL(TINY_AUTOENCODER_KL_CONFIG);
  const state = new Map(model.stateDict());
  state.delete("decoder.conv_out.bias");
  state.set("encoder.down_blocks.5.resnets.0.conv1.weight", model.encoder.conv_in.weight);
  assert.throws(
    () => model.loadStateDict(state, { source: "vae/diffusion_pytorch_model.safetensors" }),
    (e: Error) => e.message.includes("vae/diffusion_pytorch_model.safetensors")
      && e.message.includes("missing weights: decoder.conv_out.bias")
      && e.message.includes("unexpected weights: encoder.down_blocks.5.resnets.0.conv1.weight"),
  );
  model.dispose();
});

test("AutoencoderKL: scaling factor round trip, latent shapes, DiagonalGaussian sampling", () => {
  const model = new AutoencoderKL(TINY_AUTOENCODER_KL_CONFIG).eval();
  assert.equal(vaeScaleFactor(TINY_AUTOENCODER_KL_CONFIG), 2);
  assert.equal(vaeScaleFactor(SD_AUTOENCODER_KL_CONFIG), 8);
  tidy(() => noGrad(() => {
    const x = rand([2, 3, 16, 16], new Generator(5)).mul(2).sub(1);
    const latents = model.encodeLatents(x);
    assert.deepEqual(latents.shape, [2, 4, 8, 8]);
    const mean = model.encode(x).mean;
    assert.ok(latents.sub(mean.mul(0.18215)).abs().amax().item() < 1e-6, "encodeLatents = mean · scaling_factor");
    const a = model.decodeLatents(latents);
    const b = model.decode(mean);
    assert.ok(a.sub(b).abs().amax().item() < 1e-4, "decodeLatents undoes the scaling");
    // shift factor (SD3/Flux-style): latents = (z − shift)·scale
    const shifted = new AutoencoderKL({ ...TINY_AUTOENCODER_KL_CONFIG, shiftFactor: 0.5, scalingFactor: 2 });
    shifted.loadStateDict(model.stateDict());
    assert.ok(shifted.encodeLatents(x).sub(mean.sub(0.5).mul(2)).abs().amax().item() < 1e-5);
    shifted.dispose();
    // sampling: mean + σ·ε with a reproducible ε; the logvar clamp bounds σ
    const moments = cat([randn([4000, 1, 1, 1], new Generator(1)), cat([randn([2000, 1, 1, 1], new Generator(2)).add(100), randn([2000, 1, 1, 1], new Generator(2)).add(-1)], 0)], 1);
    const g = new DiagonalGaussian(moments);
    assert.equal(g.logvar.amax().item(), 20);
    const s1 = g.sample(new Generator(9));
    const s2 = g.sample(new Generator(9));
    assert.equal(s1.sub(s2).abs().amax().item(), 0);
    const z = s1.sub(g.mean).div(g.std);
    assert.ok(Math.abs(z.mean().item()) < 0.06 && Math.abs(z.std().item() - 1) < 0.05, "standardised sample is N(0, 1)");
  }));
  assert.throws(() => model.encode(rand([1, 3, 15, 16], new Generator(0))), /divisible by 2/);
  assert.throws(() => model.decode(rand([1, 3, 8, 8], new Generator(0))), /expected \[N, 4, h, w\]/);
  model.dispose();
});

test("AutoencoderKL config: SD1.5 vae/config.json reads; round trip; clear errors", () => {
  const sd = autoencoderKLConfigFromJson({
    _class_name: "AutoencoderKL", _diffusers_version: "0.6.0", act_fn: "silu", block_out_channels: [128, 256, 512, 512],
    down_block_types: Array(4).fill("DownEncoderBlock2D"), in_channels: 3, latent_channels: 4, layers_per_block: 2,
    norm_num_groups: 32, out_channels: 3, sample_size: 512, up_block_types: Array(4).fill("UpDecoderBlock2D"),
  });
  assert.deepEqual(sd, SD_AUTOENCODER_KL_CONFIG);
  const json = JSON.parse(JSON.stringify(autoencoderKLConfigToJson(TINY_AUTOENCODER_KL_CONFIG)));
  assert.equal(json._class_name, "AutoencoderKL");
  assert.deepEqual(autoencoderKLConfigFromJson(json), TINY_AUTOENCODER_KL_CONFIG);
  assert.throws(() => autoencoderKLConfigFromJson({ down_block_types: ["AttnDownEncoderBlock2D"] }, "m/vae/config.json"), /m\/vae\/config\.json.*down_block_types/);
  assert.throws(() => autoencoderKLConfigFromJson({ block_out_channels: [32, 64] }), /same length/);
  assert.throws(() => autoencoderKLConfigFromJson({ block_out_channels: [30], norm_num_groups: 32 }), /not divisible by norm_num_groups/);
});
