import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { encodePng } from "../../src/sample/png.js";
import { renderReport, niceTicks, tickLabel, ema, escapeHtml } from "../../src/eval/report.js";
import { parseMetricsLog, readRunLog } from "../../src/eval/runLog.js";
import { winRate, winRateByCategory } from "../../src/eval/stats.js";
import type { EvalJson, EvalSample } from "../../src/eval/evaluate.js";
import { metricsLines } from "./_fixtures.js";

const CHROMIUM = "/usr/bin/chromium";

/** A hand-made eval.json: 2 prompts × 2 seeds, one reward, categories; images are flat colours. */
async function fixture(): Promise<{ data: EvalJson; png: Buffer[] }> {
  const prompts = [{ prompt: "a <b>bold</b> cat", category: "Animals" }, { prompt: "an apple", category: "Food" }];
  const samples: EvalSample[] = [];
  const png: Buffer[] = [];
  const compared = [];
  let i = 0;
  for (const [pi, p] of prompts.entries()) {
    for (const seed of [0, 1]) {
      const base = 0.4 + 0.01 * i;
      const tuned = base + (i === 3 ? -0.1 : 0.1);
      samples.push({ prompt: p.prompt, seed, category: p.category, base: `images/base/${i}.png`, tuned: `images/tuned/${i}.png`, scores: { brightness: { base, tuned } } });
      compared.push({ prompt: pi, delta: tuned - base, category: p.category });
      for (const v of [base, tuned]) png.push(await encodePng({ width: 4, height: 4, data: new Uint8Array(48).fill(Math.round(v * 255)) }));
      i++;
    }
  }
  const wr = winRate(compared, { bootstrap: 200 });
  const data: EvalJson = {
    summary: {
      winRate: { brightness: { reward: "brightness", description: "mean pixel value", ...wr, byCategory: winRateByCategory(compared, { bootstrap: 200 }) } },
      ties: { brightness: wr.ties },
      implicitAccuracy: { accuracy: 0.7, interval: [0.6, 0.78], intervalMethod: "wilson", pairs: 100, right: 70, ties: 0, draws: 10, beta: 5000, meanInside: 0.3, source: "pairs.jsonl" },
      diversity: { base: 0.2, tuned: 0.18, tunedToBase: 0.1, feature: "rgb-area-16x16-rms", perPrompt: [] },
      bestOfN: null,
      config: {
        base: "models/emoji-base", tuned: "runs/dpo/final", tunedKind: "lora", prompts: "p.tsv", promptCount: 2, seeds: [0, 1], sampler: "ddim", steps: 25,
        guidance: 3, rewards: ["brightness"], tieMargin: 0, bootstrap: 200, bestOfN: 0, pairs: "pairs.jsonl", pairsLimit: 100, implicitDraws: 10,
        beta: 5000, run: "runs/dpo", training: { beta: 5000, learningRate: 1e-5 }, createdAt: "2025-01-01T00:00:00.000Z",
      },
    },
    samples,
  };
  return { data, png };
}

test("chart helpers: nice ticks, tick labels, EMA, escaping, metrics log parsing", () => {
  assert.deepEqual(niceTicks(0.516, 0.731, 4), [0.55, 0.6, 0.65, 0.7]);
  assert.deepEqual(niceTicks(1, 300, 4), [100, 200, 300]);
  assert.deepEqual(niceTicks(-0.0025, 0.0005, 4), [-0.002, -0.001, 0]);
  assert.equal(tickLabel(2e-5), "2e-5");
  assert.equal(tickLabel(2.5e-5), "2.5e-5");
  assert.equal(tickLabel(0.65), "0.65");
  assert.equal(tickLabel(200), "200");
  // bias-corrected EMA: the first value is the first sample; a constant stays constant
  assert.ok(ema([3, 3, 3], 0.9).every((v) => Math.abs(v - 3) < 1e-12));
  const e = ema([0, 1], 0.5);
  assert.equal(e[0], 0);
  assert.ok(Math.abs(e[1]! - (0.5 * 1) / 0.75) < 1e-12, "(0.5·0.5·0 + 0.5·1)/(1 − 0.25)");
  assert.equal(escapeHtml(`<a href="x">'&'</a>`), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  const steps = parseMetricsLog(metricsLines(12), "m.jsonl");
  assert.equal(steps.length, 12, "checkpoint lines skipped");
  assert.deepEqual(Object.keys(steps[0]!).sort(), ["gradNorm", "implicitAcc", "loss", "lr", "margin", "pairsPerSec", "policyMse", "referenceMse", "skippedSteps", "step"]);
  assert.throws(() => parseMetricsLog('{"type":"step","step":1}\n{oops\n', "m.jsonl"), /m\.jsonl: line 2 is not JSON/);
  const dir = mkdtempSync(join(tmpdir(), "dpo-runlog-"));
  writeFileSync(join(dir, "metrics.jsonl"), metricsLines(3));
  writeFileSync(join(dir, "config.json"), '{"beta": 2000}');
  const run = readRunLog(dir);
  assert.equal(run.steps.length, 3);
  assert.deepEqual(run.config, { beta: 2000 });
});

test("report.html renders in headless Chromium: headline, curves as SVG, category table, base | tuned grids, config", async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to run the report test`);
  const { data, png } = await fixture();
  const dir = mkdtempSync(join(tmpdir(), "dpo-report-"));
  const html = renderReport(data, {
    run: { metricsPath: "runs/dpo/metrics.jsonl", steps: parseMetricsLog(metricsLines(40), "m"), config: null, configPath: null },
    image: (i, which) => `data:image/png;base64,${png[2 * i + (which === "base" ? 0 : 1)]!.toString("base64")}`,
  });
  assert.ok(!html.includes("<b>bold</b>"), "prompts are escaped");
  const path = join(dir, "report.html");
  writeFileSync(path, html);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--headless=new"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const requests: string[] = [];
    page.on("request", (r) => { if (!r.url().startsWith("file:") && !r.url().startsWith("data:")) requests.push(r.url()); });
    await page.goto(`file://${path}`);
    assert.deepEqual(requests, [], "no network requests");
    // headline
    const cards = await page.locator(".card").allInnerTexts();
    assert.equal(cards.length, 3, "win rate, implicit accuracy, diversity");
    assert.match(cards[0]!, /75\.0%/, "3 wins of 4");
    assert.match(cards[0]!, /3 wins · 0 ties · 1 losses/);
    assert.match(cards[1]!, /70\.0%\s*\[60\.0%, 78\.0%\]/);
    // curves: four SVG charts, each with a drawn path
    const curves = page.locator("svg.curve");
    assert.equal(await curves.count(), 4);
    for (let k = 0; k < 4; k++) {
      const box = await curves.nth(k).boundingBox();
      assert.ok(box !== null && box.width > 200 && box.height > 100, `curve ${k} is laid out: ${JSON.stringify(box)}`);
      assert.ok((await curves.nth(k).locator("path").count()) >= 1);
    }
    assert.deepEqual(await page.locator("svg.curve .ct").allTextContents(), ["loss", "implicit accuracy", "margin (Lw−Ll)−(Rw−Rl)", "learning rate"]);
    // per-category table
    assert.deepEqual(await page.locator("table.cats tbody th").allTextContents(), ["Animals", "Food"]);
    // grids: one block per prompt, base | tuned per seed, every image decoded and shown at 128 px
    const blocks = page.locator(".prompt-block");
    assert.equal(await blocks.count(), 2);
    assert.match(await blocks.nth(0).locator(".prompt").innerText(), /a <b>bold<\/b> cat$/, "the prompt shown as text, not markup");
    assert.equal(await blocks.nth(0).locator(".cat").innerText(), "Animals");
    assert.equal(await page.locator(".pair").count(), 4);
    const imgs = await page.locator(".pair img").evaluateAll((els) => els.map((e) => {
      const img = e as HTMLImageElement;
      return { ok: img.complete && img.naturalWidth === 4, w: img.getBoundingClientRect().width, alt: img.alt };
    }));
    assert.equal(imgs.length, 8);
    assert.ok(imgs.every((i) => i.ok && i.w === 128), JSON.stringify(imgs));
    assert.deepEqual(imgs.slice(0, 2).map((i) => i.alt), ["base, seed 0", "tuned, seed 0"]);
    assert.deepEqual(await page.locator(".pair td.l").allTextContents(), [((0.43 - 0.1)).toPrecision(3)], "the one loss is marked");
    // config
    assert.match(await page.locator("pre").first().innerText(), /"sampler": "ddim"/);
    const shot = join(dir, "report.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(existsSync(shot));
  } finally {
    await browser.close();
  }
});
