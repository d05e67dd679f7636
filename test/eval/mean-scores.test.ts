// meanScore (the report's mean-score table): the mean and a prompt-cluster bootstrap interval.
import { test } from "node:test";
import assert from "node:assert/strict";
import { meanScore } from "../../src/eval/evaluate.js";
import { clusterBootstrap } from "../../src/eval/stats.js";

test("meanScore: exact mean; constant scores give a zero-width interval; clusters are prompts", () => {
  const c = meanScore([2, 2, 2, 2], [0, 0, 1, 1], 200);
  assert.equal(c.mean, 2);
  assert.deepEqual(c.interval, [2, 2]);
  // two prompts with per-prompt means 1 and 3 (two seeds each): the interval is the cluster bootstrap's
  const values = [0, 2, 3, 3];
  const m = meanScore(values, [0, 0, 1, 1], 500, 7);
  assert.equal(m.mean, 2);
  assert.deepEqual(m.interval, clusterBootstrap([[2, 2], [6, 2]], 500, 7));
  assert.ok(m.interval[0] >= 1 && m.interval[1] <= 3, "a replicate's mean lies between the prompt means");
});
