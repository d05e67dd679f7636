// The human votes in report.html: an eval folder re-rendered with its human.sqlite shows the
// per-question win rates, the majority, κ and the reward beside them; votes cast on images that
// changed since are left out and counted; `eval --report-only` does the same from the CLI.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import evalCommand from "../../src/cli/commands/eval.js";
import { fileSha256, HumanEvalStore } from "../../src/eval/human.js";
import { rerenderReport } from "../../src/eval/humanReport.js";
import { evaluate, type EvalJson, type EvalSample } from "../../src/eval/evaluate.js";
import { loadModelPair } from "../../src/eval/models.js";
import { winRate } from "../../src/eval/stats.js";
import { encodePng } from "../../src/sample/png.js";
import { cliRunner } from "../cli/_capture.js";
import { brightness, makeTinyFolders } from "./_fixtures.js";

/** An eval folder: 2 prompts × 2 seeds, reward "brightness" says tuned wins on samples 0–2, loses on 3. */
async function evalFolder(dir: string): Promise<EvalJson> {
  mkdirSync(join(dir, "images", "base"), { recursive: true });
  mkdirSync(join(dir, "images", "tuned"), { recursive: true });
  const samples: EvalSample[] = [];
  const compared = [];
  for (let i = 0; i < 4; i++) {
    const base = 0.4 + 0.01 * i;
    const tuned = base + (i === 3 ? -0.1 : 0.1);
    samples.push({ prompt: i < 2 ? "a cat" : "an apple", seed: i % 2, base: `images/base/${i}.png`, tuned: `images/tuned/${i}.png`, scores: { brightness: { base, tuned } } });
    compared.push({ prompt: i < 2 ? 0 : 1, delta: tuned - base });
    for (const [which, v] of [["base", base], ["tuned", tuned]] as const) {
      writeFileSync(join(dir, "images", which, `${i}.png`), await encodePng({ width: 4, height: 4, data: new Uint8Array(48).fill(Math.round(v * 255)) }));
    }
  }
  const wr = winRate(compared, { bootstrap: 200 });
  const data: EvalJson = {
    summary: {
      winRate: { brightness: { reward: "brightness", description: "mean pixel value", ...wr, byCategory: {} } },
      ties: { brightness: wr.ties },
      implicitAccuracy: null,
      diversity: null,
      bestOfN: null,
      config: {
        base: "models/emoji-base", tuned: "runs/dpo/final", tunedKind: "lora", prompts: "p.txt", promptCount: 2, seeds: [0, 1], sampler: "ddim", steps: 25,
        guidance: 3, rewards: ["brightness"], tieMargin: 0, bootstrap: 200, bestOfN: 0, pairs: null, pairsLimit: null, implicitDraws: 10,
        beta: 5000, run: null, training: null, createdAt: "2025-01-01T00:00:00.000Z",
      },
    },
    samples,
  };
  writeFileSync(join(dir, "eval.json"), JSON.stringify(data));
  return data;
}

/** Raters a and b: general always tuned; appeal tuned except b on 3 (base); alignment ties. */
function castVotes(dir: string, data: EvalJson): void {
  const s = new HumanEvalStore(join(dir, "human.sqlite"), { seed: "report" });
  try {
    s.syncComparisons(data.samples.map((x, id) => ({ id, prompt: x.prompt, seed: x.seed, category: null, baseSha256: fileSha256(join(dir, x.base)), tunedSha256: fileSha256(join(dir, x.tuned)) })));
    for (const rater of ["a", "b"]) {
      for (let id = 0; id < 4; id++) {
        const t = s.tunedSide(id, rater);
        const other = t === "left" ? "right" : "left";
        assert.equal(s.vote(rater, id, { general: t, appeal: rater === "b" && id === 3 ? other : t, alignment: "tie" }).ok, true);
      }
    }
  } finally {
    s.close();
  }
}

test("report.html carries the human results; changed images are left out; eval --report-only", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ddpo-human-report-"));
  try {
    const data = await evalFolder(dir);
    const none = rerenderReport(dir);
    assert.equal(none.human, null, "no human.sqlite: no section");
    assert.doesNotMatch(readFileSync(none.report, "utf8"), /Human evaluation/);

    castVotes(dir, data);
    const r = rerenderReport(dir);
    assert.ok(r.human);
    assert.equal(r.human.votes, 8);
    assert.equal(r.human.questions.general.votes.rate, 1);
    assert.equal(r.human.questions.appeal.votes.rate, 7 / 8);
    assert.equal(r.human.questions.alignment.votes.rate, 0.5);
    const html = readFileSync(r.report, "utf8");
    assert.match(html, /<section id="human"><h2>Human evaluation \(blind A\/B\)<\/h2>/);
    assert.match(html, /human · Which image do you prefer\?<\/div>\s*<div class="big">100\.0%<\/div>/);
    assert.match(html, /human · Which image is more visually appealing\?<\/div>\s*<div class="big">87\.5%<\/div>/);
    // brightness says tuned on 0–2, base on 3; the general majority is tuned everywhere → 3 of 4
    assert.match(html, /<tr><th>brightness<\/th><td><b>75\.0%<\/b>.*?<td>75\.0% <span class="muted small">of 4<\/span><\/td>/);
    assert.match(html, /src="data:image\/png;base64,/, "images embedded as before");

    // a rewritten tuned image: the votes on it no longer describe the report's images
    writeFileSync(join(dir, "images", "tuned", "0.png"), await encodePng({ width: 4, height: 4, data: new Uint8Array(48).fill(7) }));
    const stale = rerenderReport(dir, { embedImages: false });
    assert.equal(stale.human?.stale, 2);
    assert.equal(stale.human?.votes, 6);
    const staleHtml = readFileSync(stale.report, "utf8");
    assert.match(staleHtml, /2 votes were cast on images no longer in this folder and are left out/);
    assert.match(staleHtml, /src="images\/base\/0\.png"/, "--no-embed-images links the files");

    const cli = cliRunner({ eval: evalCommand });
    const j = await cli(["eval", "--report-only", "--out", dir, "--json"]);
    assert.equal(j.code, 0, j.stderr);
    const out = j.json();
    assert.equal(out.human.votes, 6);
    assert.equal(out.human.stale, 2);
    assert.equal(out.human.questions.appeal.votes.rate, 5 / 6);
    const text = await cli(["eval", "--report-only", "--out", dir]);
    assert.match(text.stdout, /human general\s+100\.0%/);
    const bad = await cli(["eval", "--report-only", "--out", dir, "--human", join(dir, "nope.sqlite")]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--human .*nope\.sqlite: no such file/);
    const empty = await cli(["eval", "--report-only", "--out", join(dir, "images")]);
    assert.match(empty.stderr, /eval\.json does not exist/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("evaluate() into a folder with human.sqlite merges the votes into its report", async () => {
  const root = mkdtempSync(join(tmpdir(), "ddpo-human-evaluate-"));
  try {
    const folders = makeTinyFolders(root);
    const out = join(root, "eval");
    const run = async (human?: string) => {
      const models = loadModelPair(folders.base, folders.unetRun);
      try {
        return await evaluate({
          models, prompts: [{ prompt: "a cat" }, { prompt: "a dog" }], promptSource: "p.txt", seeds: [0], sampler: "ddim", steps: 2, guidance: 1,
          rewards: [brightness], bootstrap: 100, outDir: out, human,
        });
      } finally {
        models.dispose();
      }
    };
    const first = await run();
    assert.doesNotMatch(readFileSync(join(out, "report.html"), "utf8"), /id="human"/);
    castVotes2(out, first);
    // the same seeds and models again: the images' bytes (sha256) match the voted ones
    await run();
    const html = readFileSync(join(out, "report.html"), "utf8");
    assert.match(html, /<section id="human">/);
    assert.match(html, /4 votes from 2 raters on 2 comparisons/);
    assert.doesNotMatch(html, /no longer in this folder/, "deterministic sampling: no vote went stale");
    assert.match(html, /human · Which image do you prefer\?<\/div>\s*<div class="big">100\.0%/);
    assert.match(html, /human · Which image is more visually appealing\?<\/div>\s*<div class="big">0\.0%/);
    // an explicit --human file elsewhere that does not exist is simply no section in the library
    await run(join(root, "none.sqlite"));
    assert.doesNotMatch(readFileSync(join(out, "report.html"), "utf8"), /id="human"/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

/** Raters a and b on every comparison of `data`: general tuned, appeal base, alignment tie. */
function castVotes2(dir: string, data: EvalJson): void {
  const s = new HumanEvalStore(join(dir, "human.sqlite"));
  try {
    s.syncComparisons(data.samples.map((x, id) => ({ id, prompt: x.prompt, seed: x.seed, category: null, baseSha256: fileSha256(join(dir, x.base)), tunedSha256: fileSha256(join(dir, x.tuned)) })));
    for (const rater of ["a", "b"]) {
      for (let id = 0; id < data.samples.length; id++) {
        const t = s.tunedSide(id, rater);
        assert.equal(s.vote(rater, id, { general: t, appeal: t === "left" ? "right" : "left", alignment: "tie" }).ok, true);
      }
    }
  } finally {
    s.close();
  }
}
