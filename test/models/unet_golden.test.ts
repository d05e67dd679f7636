// The UNet against an independent PyTorch transcription of diffusers (scripts/golden/models/):
// parameter names and shapes, and outputs/gradients with the same deterministic weights.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Generator, randn, tensor, tidy, noGrad } from "../../src/tensor/index.js";
import type { Module } from "../../src/nn/index.js";
import { UNet2DConditionModel, describeParameters, parseUNetConfig, timestepEmbedding, TINY_UNET_CONFIG, toDiffusersConfig } from "../../src/models/unet/index.js";

const names = JSON.parse(readFileSync("test/golden/models/unet_names.json", "utf8")) as Record<string, { config: unknown; params: [string, number[]][] }>;
const golden = JSON.parse(readFileSync("test/golden/models/unet_forward.json", "utf8")) as Record<string, any>;

/** The reference's weight rule (unet_reference.fill_deterministic). */
function fillDeterministic(model: Module): void {
  const params = new Map(model.namedParameters());
  const sorted = [...params.keys()].sort();
  noGrad(() => tidy(() => {
    sorted.forEach((name, k) => {
      const p = params.get(name)!;
      const z = randn(p.shape, new Generator(1000 + k));
      const v = p.ndim >= 2
        ? z.mul(1 / Math.sqrt(p.shape.slice(1).reduce((a, b) => a * b, 1)))
        : name.endsWith(".weight") ? z.mul(0.1).add(1) : z.mul(0.1);
      p.copy_(v);
    });
  }));
}

function close(actual: number[], expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  assert.ok(worst <= tol, `${what}: max abs diff ${worst} > ${tol}`);
}

test("TINY_UNET_CONFIG is the config the goldens were made with", () => {
  const parsed = parseUNetConfig(names.tiny!.config).config;
  assert.deepEqual(parsed, TINY_UNET_CONFIG);
  assert.deepEqual(parseUNetConfig(toDiffusersConfig(TINY_UNET_CONFIG)).config, TINY_UNET_CONFIG);
});

for (const key of ["tiny", "variant", "no_mid"]) {
  test(`parameter names and shapes match the diffusers-named reference (${key})`, () => {
    const { config } = parseUNetConfig(names[key]!.config, key);
    const unet = new UNet2DConditionModel(config);
    const ours = unet.namedParameters().map(([n, p]) => [n, p.shape]);
    assert.deepEqual(ours, names[key]!.params);
    unet.dispose();
  });
}

test("SD1.5 config.json: every parameter name and shape equals the reference's (meta build)", () => {
  const { config, ignoredKeys } = parseUNetConfig(names.sd15!.config, "sd15 unet/config.json");
  assert.deepEqual(ignoredKeys, []);
  const ours = describeParameters(config).map((p) => [p.name, p.shape]);
  assert.deepEqual(ours, names.sd15!.params);
  const byName = new Map(ours as [string, number[]][]);
  assert.deepEqual(byName.get("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"), [320, 768]);
  assert.equal(ours.length, 686);
  assert.equal((ours as [string, number[]][]).reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0), 859_520_964);
});

for (const key of ["tiny", "variant", "no_mid"]) {
  test(`forward and gradients match the PyTorch reference (${key})`, () => {
    const g = golden[key];
    const { config } = parseUNetConfig(g.config, key);
    const unet = new UNet2DConditionModel(config);
    fillDeterministic(unet);
    const params = new Map(unet.namedParameters());
    tidy(() => {
      const x = randn(g.input_shape, new Generator(7));
      const ctx = randn(g.context_shape, new Generator(8));
      const y = unet.forward(x, tensor(g.timesteps, [2], { dtype: "i64" }), ctx);
      assert.deepEqual(y.shape, g.output_shape);
      const [, c, h, w] = y.shape as [number, number, number, number];
      close(y.slice(0, 0, 1).slice(1, 0, 1).slice(2, 0, 3).slice(3, 0, 3).toArray(), g.corner, 1e-4, "corner");
      close(y.slice(0, 1, 2).slice(1, c - 1, c).slice(2, h - 3, h).slice(3, w - 3, w).toArray(), g.tail, 1e-4, "tail");
      close(y.flatten().slice(0, 0, undefined, g.stride).toArray(), g.strided, 1e-4, "strided");
      const sum = y.to("f64").sum().item();
      assert.ok(Math.abs(sum - g.sum) <= 1e-5 * y.size, `sum ${sum} vs ${g.sum}`);
      assert.ok(Math.abs(y.to("f64").abs().mean().item() - g.abs_mean) < 1e-5, "abs mean");
      y.square().mean().backward();
      for (const [name, ref] of Object.entries(g.grads as Record<string, { sum: number; abs_sum: number; first: number[] }>)) {
        const grad = params.get(name)!.grad!;
        const absSum = grad.to("f64").abs().sum().item();
        assert.ok(Math.abs(absSum - ref.abs_sum) <= 1e-4 * Math.max(1, ref.abs_sum), `${name} grad abs sum ${absSum} vs ${ref.abs_sum}`);
        assert.ok(Math.abs(grad.to("f64").sum().item() - ref.sum) <= 1e-4 * Math.max(1, ref.abs_sum), `${name} grad sum`);
        close(grad.flatten().slice(0, 0, 4).toArray(), ref.first, 1e-5 * Math.max(1, ref.abs_sum), `${name} grad`);
      }
    });
    unet.dispose();
  });
}

test("timestep embedding matches diffusers' get_timestep_embedding (incl. odd width)", () => {
  const te = golden.timestep_embedding;
  const t = tensor(te.timesteps, [te.timesteps.length], { dtype: "i64" });
  close(timestepEmbedding(t, 32, { flipSinToCos: true, freqShift: 0 }).toArray(), te.flip_shift0_dim32, 1e-5, "flip/shift0");
  close(timestepEmbedding(t, 15, { flipSinToCos: false, freqShift: 1 }).toArray(), te.noflip_shift1_dim15, 1e-5, "noflip/shift1/odd");
});
