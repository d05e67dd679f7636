// The human evaluation's arithmetic and vote store: Fleiss' kappa against the closed form of the
// textbook example, win rates / majorities / kappa on a constructed study worked out by hand, the
// left/right → tuned/base mapping, and the SQLite store (keyed coin, order, one vote per rater,
// migration-safe reopening, refusing changed images).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PreferenceStore } from "../../src/data/store.js";
import { HumanEvalStore, readHumanResults, winnerOf, type HumanComparison } from "../../src/eval/human.js";
import { fleissKappa, humanResults, majorityOf, rewardAgreement, type HumanVote, type HumanWinner } from "../../src/eval/humanStats.js";
import { wilsonInterval } from "../../src/eval/stats.js";

const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test("Fleiss' kappa: the 10 subjects × 14 raters × 5 categories example (Fleiss 1971 layout), closed form", () => {
  const table = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
  ];
  // by hand: Σ_i (Σ_j n_ij² − 14) = 688 over 10·14·13 = 1820; column totals 20, 28, 39, 21, 32 of 140
  const observed = 688 / 1820;
  const expected = (20 ** 2 + 28 ** 2 + 39 ** 2 + 21 ** 2 + 32 ** 2) / 140 ** 2;
  const k = fleissKappa(table);
  // measured |error| 0 on all three (another summation order could give ~1e-16); tolerance 1e-12
  close(k.observed, observed, 1e-12, "P̄");
  close(k.expected, expected, 1e-12, "P̄e");
  close(k.kappa, (observed - expected) / (1 - expected), 1e-12, "κ");
  close(k.kappa, 0.20993, 5e-5, "κ ≈ 0.210, the published value");
  assert.equal(k.subjects, 10);
});

test("Fleiss' kappa: unequal raters per subject, single ratings left out, degenerate cases", () => {
  // [3,0,0]: P = (9 − 3)/6 = 1; [1,1,0]: P = 0; [0,0,1] has one rating → left out
  // P̄ = 1/2, p = (4/5, 1/5, 0), P̄e = 17/25, κ = (1/2 − 17/25)/(8/25) = −9/16
  const k = fleissKappa([[3, 0, 0], [1, 1, 0], [0, 0, 1]]);
  assert.equal(k.subjects, 2);
  close(k.kappa, -9 / 16, 1e-15, "κ");
  close(fleissKappa([[2, 0, 0], [0, 2, 0]]).kappa, 1, 1e-15, "perfect agreement");
  assert.ok(Number.isNaN(fleissKappa([[2, 0], [3, 0]]).kappa), "every rating in one category: κ undefined");
  assert.ok(Number.isNaN(fleissKappa([[1, 0]]).kappa), "no subject with two ratings");
  assert.throws(() => fleissKappa([[1, 1], [1]]), /2 category counts/);
});

test("left/right answers map back to tuned/base through the logged layout", () => {
  assert.equal(winnerOf("left", "left"), "tuned");
  assert.equal(winnerOf("left", "right"), "base");
  assert.equal(winnerOf("right", "right"), "tuned");
  assert.equal(winnerOf("right", "left"), "base");
  assert.equal(winnerOf("tie", "left"), "tie");
  assert.equal(majorityOf({ tuned: 2, base: 1, tie: 2 }), "tuned");
  assert.equal(majorityOf({ tuned: 1, base: 1, tie: 0 }), "tie");
  assert.equal(majorityOf({ tuned: 0, base: 1, tie: 4 }), "base", "tie votes abstain from the majority");
});

/** Three raters on three comparisons of two prompts; worked out by hand in the test below. */
function studyVotes(): HumanVote[] {
  const T = "tuned", B = "base", E = "tie";
  // [comparison, prompt, rater, general, appeal, alignment]
  const rows: [number, string, string, HumanWinner, HumanWinner, HumanWinner][] = [
    [0, "p0", "a", T, T, B], [0, "p0", "b", T, T, T], [0, "p0", "c", B, T, E],
    [1, "p0", "a", E, T, B], [1, "p0", "b", B, T, T], [1, "p0", "c", E, T, E],
    [2, "p1", "a", T, T, B], [2, "p1", "b", T, T, T], [2, "p1", "c", E, T, E],
  ];
  return rows.map(([comparison, prompt, rater, general, appeal, alignment]) => ({ comparison, prompt, seed: comparison, rater, answers: { general, appeal, alignment } }));
}

test("human results on a constructed study: win rates, bootstrap interval, majority, kappa", () => {
  const r = humanResults(studyVotes(), { bootstrap: 2000, seed: 3 });
  assert.equal(r.votes, 9);
  assert.equal(r.comparisons, 3);
  assert.equal(r.prompts, 2);
  assert.deepEqual(r.raters, [{ rater: "a", votes: 3 }, { rater: "b", votes: 3 }, { rater: "c", votes: 3 }]);
  assert.deepEqual(r.ratersPerComparison, { min: 3, max: 3 });

  // general: tuned 4, base 2, tie 3 of 9 → (4 + 1.5)/9
  const g = r.questions.general;
  assert.deepEqual([g.votes.wins, g.votes.losses, g.votes.ties, g.votes.n], [4, 2, 3, 9]);
  close(g.votes.rate, 5.5 / 9, 1e-15, "general win rate");
  close(g.votes.decisive, 4 / 6, 1e-15, "decisive");
  assert.deepEqual(g.votes.decisiveInterval, wilsonInterval(4, 6));
  // bootstrap over the 2 prompts: a replicate is p0p0 = 3/6, p0p1 = 5.5/9 or p1p1 = 2.5/3, each
  // of the extremes drawn ~500 times of 2000, so the 2.5% and 97.5% quantiles are exactly those
  assert.deepEqual(g.votes.interval, [0.5, 2.5 / 3]);
  // majorities: comparison 0 tuned (2 vs 1), 1 base (0 vs 1), 2 tuned (2 vs 0) → 2/3
  assert.deepEqual(r.perComparison.map((c) => c.tally.general.majority), ["tuned", "base", "tuned"]);
  close(g.majority.rate, 2 / 3, 1e-15, "majority win rate");
  // κ: counts (tuned, base, tie) = (2,1,0), (0,1,2), (2,0,1): P_i = 2/6 each, P̄ = 1/3;
  // P̄e = (4² + 2² + 3²)/81 = 29/81 → κ = (27 − 29)/(81 − 29) = −1/26
  close(g.agreement.kappa, -1 / 26, 1e-15, "κ general");
  close(g.agreement.observed, 1 / 3, 1e-15, "P̄ general");

  const ap = r.questions.appeal;
  assert.equal(ap.votes.rate, 1);
  assert.deepEqual(ap.votes.interval, [1, 1]);
  assert.equal(ap.majority.rate, 1);
  assert.ok(Number.isNaN(ap.agreement.kappa), "unanimous on one category: κ undefined");

  // alignment: every comparison (1,1,1): P_i = 0, P̄e = 1/3 → κ = −1/2; majorities all tie → ½
  const al = r.questions.alignment;
  close(al.votes.rate, 0.5, 1e-15, "alignment");
  close(al.agreement.kappa, -0.5, 1e-15, "κ alignment");
  assert.equal(al.majority.ties, 3);
  close(al.majority.rate, 0.5, 1e-15, "majority of ties");

  // a reward that says tuned everywhere agrees with 2 of the 3 decisive general majorities
  assert.deepEqual(rewardAgreement(r, "general", () => 0.3), { agree: 2, decisive: 3, rate: 2 / 3 });
  assert.deepEqual(rewardAgreement(r, "general", (i) => (i === 1 ? null : -0.3)), { agree: 0, decisive: 2, rate: 0 });
  assert.throws(() => humanResults([...studyVotes(), studyVotes()[0]!]), /two votes on comparison 0/);
});

const comparisons = (n: number, tag = ""): HumanComparison[] =>
  Array.from({ length: n }, (_, id) => ({ id, prompt: `prompt ${id % 5}`, seed: Math.floor(id / 5), category: null, baseSha256: `b${id}${tag}`, tunedSha256: `t${id}${tag}` }));

test("vote store: keyed coin, per-rater order, one vote per rater, reopen, changed images refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "ddpo-human-"));
  try {
    const file = join(dir, "human.sqlite");
    const s = new HumanEvalStore(file, { seed: "fixed-seed" });
    s.syncComparisons(comparisons(40));
    // the coin differs between comparisons and raters and both sides occur
    const ann = Array.from({ length: 40 }, (_, i) => s.coin(i, "ann"));
    const bob = Array.from({ length: 40 }, (_, i) => s.coin(i, "bob"));
    assert.ok(ann.includes("left") && ann.includes("right"), `both layouts for ann: ${ann.join(",")}`);
    assert.notDeepEqual(ann, bob, "the layout depends on the rater");
    const order = s.orderFor("ann");
    assert.deepEqual([...order].sort((a, b) => a - b), [...Array(40).keys()], "the order is a permutation");
    assert.notDeepEqual(order, s.orderFor("bob"));
    assert.deepEqual(s.next("ann").comparison?.id, order[0]);

    const side = s.tunedSide(order[0]!, "ann");
    assert.equal(side, ann[order[0]!], "the logged layout is the coin");
    const v = s.vote("ann", order[0]!, { general: side, appeal: "tie", alignment: side === "left" ? "right" : "left" });
    assert.deepEqual(v, { ok: true, tunedSide: side });
    assert.deepEqual(s.vote("ann", order[0]!, { general: "tie", appeal: "tie", alignment: "tie" }), { ok: false, reason: "duplicate" });
    assert.deepEqual(s.vote("ann", 99, { general: "tie", appeal: "tie", alignment: "tie" }), { ok: false, reason: "no-comparison" });
    assert.equal(s.next("ann").comparison?.id, order[1], "the next comparison in ann's order");
    assert.deepEqual(s.next("ann").progress, { done: 1, total: 40 });
    const { votes } = s.votes();
    assert.deepEqual(votes[0]!.answers, { general: "tuned", appeal: "tie", alignment: "base" });

    // unchanged re-sync is a no-op; a changed image under a vote is refused, elsewhere accepted
    s.syncComparisons(comparisons(40));
    assert.throws(() => s.syncComparisons(comparisons(40, "x")), /changed \(prompt, seed or image bytes\) since raters voted/);
    assert.throws(() => s.syncComparisons(comparisons(40).filter((c) => c.id !== order[0])), /no longer in eval\.json/);
    const other = order[1]!;
    s.syncComparisons(comparisons(40).map((c) => (c.id === other ? { ...c, tunedSha256: "new" } : c)));
    assert.equal(s.comparison(other)?.tunedSha256, "new");
    s.close();

    // reopening keeps the seed (a new seed argument does not re-deal the layouts) and the votes
    const again = new HumanEvalStore(file, { seed: "another-seed" });
    assert.deepEqual(Array.from({ length: 40 }, (_, i) => again.coin(i, "ann")), ann);
    assert.equal(again.version(), 1);
    assert.equal(again.votes().votes.length, 1);
    again.close();

    const r = readHumanResults(file);
    assert.equal(r?.votes, 1);
    assert.equal(r?.questions.general.votes.wins, 1);
    const current = new Map(comparisons(40, "x").map((c) => [c.id, c]));
    assert.equal(readHumanResults(file, { current })?.stale, 1, "votes on other images are counted as stale and left out");
    assert.equal(readHumanResults(join(dir, "missing.sqlite")), null);

    const pref = new PreferenceStore(join(dir, "prefs.db"));
    pref.close();
    assert.throws(() => new HumanEvalStore(join(dir, "prefs.db")), /SQLite file of another kind/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
