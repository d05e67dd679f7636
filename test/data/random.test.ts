import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Rng, hashInts, rngFor } from "../../src/data/random.js";

const golden = JSON.parse(readFileSync("test/golden/data/rng.json", "utf8")) as { uint32: Record<string, number[]> };

test("xoshiro128** with SplitMix32 seeding matches the Python reference (golden)", () => {
  for (const [seed, expected] of Object.entries(golden.uint32)) {
    const g = new Rng(Number(seed));
    assert.deepEqual(Array.from({ length: expected.length }, () => g.nextUint32()), expected, `seed ${seed}`);
  }
});

test("int() is uniform and in range; shuffle is a permutation", () => {
  const g = new Rng(123);
  const counts = new Array(6).fill(0) as number[];
  const n = 60000;
  for (let i = 0; i < n; i++) counts[g.int(0, 6)]!++;
  // chi-square with 5 degrees of freedom: 99.9% quantile is 20.5
  const chi = counts.reduce((a, c) => a + (c - n / 6) ** 2 / (n / 6), 0);
  assert.ok(chi < 20.5, `chi-square ${chi}`);
  const a = Array.from({ length: 50 }, (_, i) => i);
  const s = new Rng(9).shuffle([...a]);
  assert.notDeepEqual(s, a);
  assert.deepEqual([...s].sort((x, y) => x - y), a);
  assert.throws(() => g.int(3, 3), /low < high/);
});

test("rngFor: same key → same stream, any key change → a different stream", () => {
  assert.equal(rngFor(1, 2, 3).nextUint32(), rngFor(1, 2, 3).nextUint32());
  const base = rngFor(1, 2, 3).nextUint32();
  for (const k of [[2, 2, 3], [1, 3, 3], [1, 2, 4], [1, 2, 3, 0]]) assert.notEqual(rngFor(...(k as [number, ...number[]])).nextUint32(), base, String(k));
  assert.notEqual(hashInts(0, 4294967296), hashInts(0, 0), "numbers above 2^32 are not truncated");
});
