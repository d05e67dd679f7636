// Seeded random numbers and layer initialisation against PyTorch (test/golden/engine/random.json).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Generator, cat, rand, randint, randn, randperm, tidy } from "../../src/tensor/index.js";
import { Conv2d, ConvTranspose2d, Embedding, Linear, setInitSeed } from "../../src/nn/index.js";

const golden = JSON.parse(readFileSync("test/golden/engine/random.json", "utf8")) as {
  sequences: { fn: string; seed: number; shape: number[]; low?: number; high?: number; values: number[] }[];
  init: { seed: number; tensors: Record<string, number[]> };
};

test("randn / rand / randint / randperm reproduce torch.Generator().manual_seed(seed) bit for bit", () => {
  assert.ok(golden.sequences.length >= 10);
  for (const s of golden.sequences) {
    tidy(() => {
      const g = new Generator(s.seed);
      const t =
        s.fn === "randn" ? randn(s.shape, g)
        : s.fn === "rand" ? rand(s.shape, g)
        : s.fn === "randint" ? randint(s.low!, s.high!, s.shape, g)
        : s.fn === "randperm" ? randperm(s.shape[0]!, g)
        : cat([randn([s.shape[0]!], g), randn([s.shape[1]!], g)]); // randn2: two draws continue the stream
      // f32 values widened to f64 are exact, so equality is bitwise.
      assert.deepEqual(Array.from(t.toFloat64Array()), s.values, `${s.fn} seed ${s.seed} shape [${s.shape}]`);
    });
  }
});

test("layer initialisation after setInitSeed(s) equals torch.nn's after torch.manual_seed(s)", () => {
  setInitSeed(golden.init.seed);
  const modules = { linear: new Linear(5, 3), conv: new Conv2d(4, 6, 3), convt: new ConvTranspose2d(4, 3, 3), emb: new Embedding(7, 4) };
  for (const [prefix, m] of Object.entries(modules)) {
    for (const [name, p] of m.namedParameters()) {
      const expected = golden.init.tensors[`${prefix}.${name}`];
      assert.ok(expected, `${prefix}.${name} missing from the golden file`);
      assert.deepEqual(Array.from(p.toFloat64Array()), expected, `${prefix}.${name}`);
    }
    m.dispose();
  }
  setInitSeed(0);
});

test("Generator state save → restore reproduces the sequence; manualSeed restarts it", () => {
  tidy(() => {
    const g = new Generator(123);
    randn([10], g);
    const state = g.getState();
    const a = randn([50], g).toFloat32Array();
    const b = rand([7], g).toFloat32Array();
    g.setState(state);
    assert.deepEqual(randn([50], g).toFloat32Array(), a);
    assert.deepEqual(rand([7], g).toFloat32Array(), b);
    const other = new Generator(999).setState(state);
    assert.deepEqual(randn([50], other).toFloat32Array(), a, "a state moves between generators");
    g.manualSeed(123);
    const fresh = new Generator(123);
    assert.deepEqual(randn([16], g).toFloat32Array(), randn([16], fresh).toFloat32Array());
    assert.notDeepEqual(randn([16], new Generator(124)).toFloat32Array(), randn([16], new Generator(123)).toFloat32Array());
  });
});
