import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { clusterBootstrap, outcomeOf, quantileSorted, winRate, winRateByCategory, wilsonInterval, Z95 } from "../../src/eval/stats.js";
import { parsePrompts, selectPrompts } from "../../src/eval/prompts.js";

const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test("Wilson interval equals the score-test inversion computed in Python (scripts/golden/eval/wilson.py)", () => {
  const golden = JSON.parse(readFileSync(new URL("../golden/eval/wilson.json", import.meta.url), "utf8")) as {
    z: number; cases: { k: number; n: number; interval: [number, number] }[];
  };
  close(Z95, golden.z, 1e-12, "z");
  for (const c of golden.cases) {
    const [lo, hi] = wilsonInterval(c.k, c.n);
    close(lo, c.interval[0], 1e-9, `lower ${c.k}/${c.n}`);
    close(hi, c.interval[1], 1e-9, `upper ${c.k}/${c.n}`);
  }
  // by hand: k = 2, n = 3, z² = 3.8415: centre = (2/3 + 0.64025)/2.28050 = 0.57306
  const [lo, hi] = wilsonInterval(2, 3);
  close((lo + hi) / 2, (2 / 3 + Z95 ** 2 / 6) / (1 + Z95 ** 2 / 3), 1e-12, "centre");
  assert.deepEqual(wilsonInterval(0, 0), [0, 1]);
  assert.throws(() => wilsonInterval(4, 3), /0 ≤ k ≤ n/);
});

test("win rate with explicit ties: hand-computed case", () => {
  // Δ: 0.5 win, −0.2 loss, 0.01 tie (margin 0.05), 0.3 win, −0.05 tie (|Δ| = margin is a tie)
  const deltas = [0.5, -0.2, 0.01, 0.3, -0.05];
  const r = winRate(deltas.map((delta, prompt) => ({ prompt, delta })), { tieMargin: 0.05 });
  assert.equal(r.wins, 2);
  assert.equal(r.losses, 1);
  assert.equal(r.ties, 2);
  assert.equal(r.n, 5);
  assert.equal(r.prompts, 5);
  close(r.rate, (2 + 0.5 * 2) / 5, 1e-15, "rate = 3/5");
  close(r.decisive, 2 / 3, 1e-15, "decisive = 2/3");
  assert.deepEqual(r.decisiveInterval, wilsonInterval(2, 3));
  close(r.meanDelta, 0.56 / 5, 1e-15, "mean Δ");
  assert.ok(r.interval[0] <= r.rate && r.rate <= r.interval[1]);
  // margin 0: only exact zeros tie
  const r0 = winRate([{ prompt: 0, delta: 0 }, { prompt: 1, delta: 1e-9 }]);
  assert.deepEqual([r0.wins, r0.ties, r0.losses], [1, 1, 0]);
  assert.equal(outcomeOf(-0.1, 0.1), "tie");
  assert.throws(() => outcomeOf(Number.NaN, 0), /non-finite/);
  // every sample tied: decisive rate undefined, win rate ½
  const allTie = winRate([{ prompt: 0, delta: 0 }, { prompt: 1, delta: 0 }]);
  assert.ok(Number.isNaN(allTie.decisive));
  assert.equal(allTie.rate, 0.5);
});

test("bootstrap over prompts: exact small cases and the normal approximation for many prompts", () => {
  // all prompts won → every replicate is 1
  assert.deepEqual(clusterBootstrap([[1, 1], [2, 2], [1, 1]], 200, 3), [1, 1]);
  // two prompts, one won one lost: replicates are 0 (p = ¼), ½ (p = ½), 1 (p = ¼) → 2.5%/97.5% quantiles 0 and 1
  assert.deepEqual(clusterBootstrap([[1, 1], [0, 1]], 4000, 1), [0, 1]);
  // seeds of one prompt travel together: prompt 0 has 3 seeds all won, prompt 1 one loss
  const samples = [
    { prompt: 0, delta: 1 }, { prompt: 0, delta: 1 }, { prompt: 0, delta: 1 }, { prompt: 1, delta: -1 },
  ];
  const r = winRate(samples, { bootstrap: 4000 });
  close(r.rate, 0.75, 1e-15, "rate");
  // replicates: {1,1} → 0 (p ¼), {0,1} → 3/4 (p ½), {0,0} → 1 (p ¼)
  assert.deepEqual(r.interval, [0, 1]);
  // deterministic for a seed
  assert.deepEqual(winRate(samples, { seed: 5 }).interval, winRate(samples, { seed: 5 }).interval);

  // 400 prompts, 1 seed, 60% wins: the bootstrap interval ≈ p ± 1.96·√(p(1−p)/n)
  const many = Array.from({ length: 400 }, (_, i) => ({ prompt: i, delta: i % 5 < 3 ? 1 : -1 }));
  const m = winRate(many, { bootstrap: 4000, seed: 2 });
  const half = Z95 * Math.sqrt((0.6 * 0.4) / 400);
  close(m.interval[0], 0.6 - half, 0.008, "lower vs normal approximation");
  close(m.interval[1], 0.6 + half, 0.008, "upper vs normal approximation");
  // numpy-style quantile
  close(quantileSorted([0, 10, 20, 30], 0.5), 15, 1e-12, "median");
  close(quantileSorted([1, 2, 3, 4, 5], 0.975), 4.9, 1e-12, "q97.5");
});

test("per-category breakdown", () => {
  const s = [
    { prompt: 0, delta: 1, category: "Animals" },
    { prompt: 1, delta: -1, category: "Animals" },
    { prompt: 2, delta: 1, category: "Food" },
    { prompt: 3, delta: 0, category: "Food" },
    { prompt: 4, delta: 1 },
  ];
  const by = winRateByCategory(s);
  assert.deepEqual(Object.keys(by), ["Animals", "Food"]);
  assert.equal(by.Animals!.rate, 0.5);
  assert.equal(by.Food!.rate, 0.75);
  assert.equal(by.Food!.ties, 1);
});

test("prompt files: plain lines, PartiPrompts TSV, stratified selection", () => {
  assert.deepEqual(parsePrompts("a cat\n\n# comment\n a dog \n", "p.txt"), [{ prompt: "a cat" }, { prompt: "a dog" }]);
  const tsv = "Prompt\tCategory\tChallenge\tNote\nbond\tAbstract\tBasic\t\nan apple\tFood\tBasic\t\nlife\tAbstract\tBasic\t\n";
  const ps = parsePrompts(tsv, "parti.tsv");
  assert.deepEqual(ps, [{ prompt: "bond", category: "Abstract" }, { prompt: "an apple", category: "Food" }, { prompt: "life", category: "Abstract" }]);
  assert.deepEqual(selectPrompts(ps, 2).map((p) => p.prompt), ["bond", "an apple"], "round-robin over categories");
  assert.deepEqual(selectPrompts([{ prompt: "a" }, { prompt: "b" }, { prompt: "c" }], 2).map((p) => p.prompt), ["a", "b"]);
  assert.throws(() => parsePrompts("x\ty\n1\t2\n", "bad.tsv"), /bad\.tsv: looks like a TSV/);
  assert.throws(() => parsePrompts("\n# only a comment\n", "empty.txt"), /empty\.txt: no prompts/);
  const parti = parsePrompts(readFileSync("/work/shared/data/prompts/PartiPrompts.tsv", "utf8"), "PartiPrompts.tsv");
  assert.ok(parti.length > 1500 && parti.every((p) => p.category !== undefined), `PartiPrompts: ${parti.length} prompts with categories`);
});
