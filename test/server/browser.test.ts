// The web app in a real browser (Debian's chromium driven by playwright-core): label by keyboard,
// reload and find the votes stored; two raters at once; a cross-origin POST; the compare and run
// pages (live metrics over server-sent events). Screenshots of each page go to SCREENSHOT_DIR.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { PickapicSource } from "../../src/data/pickapic.js";
import { PreferenceStore } from "../../src/data/store.js";
import { startServer, type ServerHandle } from "../../src/server/index.js";
import { makeEvalDir, makeRunDir, makeStore, stepRecord, tinyPng } from "./_fixtures.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR ?? join(tmpdir(), "diffusion-dpo-screens");

let browser: Browser;
let dir: string;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (or set CHROMIUM_PATH)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--headless=new"] });
  dir = mkdtempSync(join(tmpdir(), "ddpo-browser-"));
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
});

after(async () => {
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function shot(page: Page, name: string): Promise<void> {
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
  await page.screenshot({ path, fullPage: true });
  assert.ok(statSync(path).size > 5000, `${path} looks empty`);
}

/** Presses `key` and waits until the page shows the next state (progress moved). */
async function pressAndWait(page: Page, key: string, expectDone: number): Promise<void> {
  await page.keyboard.press(key === " " ? "Space" : key);
  await page.waitForFunction((n) => document.getElementById("progress-text")!.textContent!.startsWith(`${n} /`), expectDone, { timeout: 5000 });
}

function stored(file: string, rater: string): Map<number, string> {
  const s = new PreferenceStore(file, { readonly: true });
  try {
    const rows = s.db.prepare("SELECT pair_id, choice FROM votes WHERE rater = ?").all(rater) as { pair_id: number; choice: string }[];
    return new Map(rows.map((r) => [r.pair_id, r.choice]));
  } finally {
    s.close();
  }
}

test("label ten pairs by keyboard, reload, find them stored; undo with u", async () => {
  const file = join(dir, "kbd.db");
  const { store } = await makeStore(file, 12);
  const h = await startServer({ store, port: 0 });
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 820 } });
  try {
    const page = await ctx.newPage();
    await page.goto(`${h.url}label`);
    await page.fill("#rater-input", "ann");
    await shot(page, "label-rater");
    await page.click("#gate-form button");
    await page.waitForSelector("#pair[data-pair-id]");
    await page.waitForFunction(() => (document.getElementById("left-img") as HTMLImageElement).naturalWidth > 0);
    await shot(page, "label");

    const keys = ["1", "2", "3", " ", "1", "2", "2", "1", "3", "1"];
    const expected = new Map<number, string>();
    for (let i = 0; i < keys.length; i++) {
      const id = Number(await page.getAttribute("#pair", "data-pair-id"));
      const left = (await page.getAttribute("#pair", "data-left-side"))!;
      const right = left === "a" ? "b" : "a";
      const k = keys[i]!;
      expected.set(id, k === "1" ? left : k === "2" ? right : k === "3" ? "tie" : "skip");
      await pressAndWait(page, k, i + 1);
    }
    assert.equal(expected.size, 10, "ten different pairs were shown");

    await page.reload();
    await page.waitForFunction(() => document.getElementById("progress-text")!.textContent === "10 / 12");
    assert.equal(await page.textContent("#rater-name"), "ann", "the rater id is kept in localStorage");
    assert.equal(await page.isHidden("#gate"), true);
    const shownAfterReload = Number(await page.getAttribute("#pair", "data-pair-id"));
    assert.ok(!expected.has(shownAfterReload), "after the reload a pair not yet labelled is shown");
    assert.deepEqual(stored(file, "ann"), expected, "a second connection to the store file sees every vote, as chosen");

    // undo: the last voted pair comes back and its vote is gone
    const lastId = [...expected.keys()].at(-1)!;
    await pressAndWait(page, "u", 9);
    assert.equal(Number(await page.getAttribute("#pair", "data-pair-id")), lastId);
    assert.equal(stored(file, "ann").has(lastId), false);
    await page.click("#btn-tie");
    await page.waitForFunction(() => document.getElementById("progress-text")!.textContent === "10 / 12");
    assert.equal(stored(file, "ann").get(lastId), "tie", "the button votes too");

    // the export buttons download the store's labelled pairs
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export-parquet")]);
    assert.equal(download.suggestedFilename(), "preferences.parquet");
    const pq = join(dir, "dl.parquet");
    await download.saveAs(pq);
    const rows = (await new PickapicSource(pq).readUnit(0)).filter((r) => r.kind === "pair");
    assert.equal(rows.length, [...stored(file, "ann").values()].filter((c) => c === "a" || c === "b").length, "one row per a/b vote (ties and skips left out)");
    await page.waitForFunction(() => /^Exported \d+ pairs to preferences\.parquet$/.test(document.getElementById("toast")?.textContent ?? ""));
  } finally {
    await ctx.close();
    await h.close();
    store.close();
  }
});

test("two raters labelling at once: every vote stored exactly once", async () => {
  const file = join(dir, "two.db");
  const { store, pairs } = await makeStore(file, 12);
  const h = await startServer({ store, port: 0 });
  const run = async (rater: string, keys: string[]) => {
    const ctx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    await ctx.addInitScript((r) => localStorage.setItem("ddpo.rater", r), rater);
    const page = await ctx.newPage();
    const expected = new Map<number, string>();
    try {
      await page.goto(`${h.url}label`);
      await page.waitForSelector("#pair[data-pair-id]");
      for (let i = 0; i < pairs.length; i++) {
        const id = Number(await page.getAttribute("#pair", "data-pair-id"));
        const left = (await page.getAttribute("#pair", "data-left-side"))!;
        const k = keys[i % keys.length]!;
        expected.set(id, k === "1" ? left : k === "2" ? (left === "a" ? "b" : "a") : k === "3" ? "tie" : "skip");
        await pressAndWait(page, k, i + 1);
      }
      await page.waitForSelector("#done:not(.hidden)");
      if (rater === "bob") await shot(page, "label-done");
    } finally {
      await ctx.close();
    }
    return expected;
  };
  try {
    const [bob, cy] = await Promise.all([run("bob", ["1", "2", "3"]), run("cy", ["2", "1", " ", "1"])]);
    assert.equal(bob.size, 12);
    assert.equal(cy.size, 12);
    assert.deepEqual(stored(file, "bob"), bob);
    assert.deepEqual(stored(file, "cy"), cy);
    const s = new PreferenceStore(file, { readonly: true });
    try {
      const perPair = s.db.prepare("SELECT pair_id, COUNT(*) AS n FROM votes GROUP BY pair_id").all() as { pair_id: number; n: number }[];
      assert.equal(perPair.length, 12);
      for (const r of perPair) assert.equal(r.n, 2, `pair ${r.pair_id} has one vote from each rater`);
    } finally {
      s.close();
    }
  } finally {
    await h.close();
    store.close();
  }
});

test("a cross-origin POST from another page is refused and stores nothing", async () => {
  const file = join(dir, "xorigin.db");
  const { store, pairs } = await makeStore(file, 2);
  const h = await startServer({ store, port: 0 });
  // another site: a plain page on another port (another origin), without the app's CSP
  const evil = createServer((_req, res) => res.writeHead(200, { "Content-Type": "text/html" }).end("<!doctype html><title>elsewhere</title>"));
  await new Promise<void>((r) => evil.listen(0, "127.0.0.1", r));
  const ctx = await browser.newContext();
  try {
    const page = await ctx.newPage();
    await page.goto(`http://localhost:${(evil.address() as AddressInfo).port}/`);
    const target = `http://127.0.0.1:${h.port}/api/label/vote`;
    const results = await page.evaluate(
      async ({ target, pairId }) => {
        const body = JSON.stringify({ rater: "mallory", pairId, choice: "a" });
        const out: string[] = [];
        // a "simple" request: sent without a preflight, refused by the same-origin check (and
        // its answer unreadable: Cross-Origin-Resource-Policy makes it a network error)
        try {
          const r1 = await fetch(target, { method: "POST", mode: "no-cors", headers: { "Content-Type": "text/plain" }, body });
          out.push(r1.type);
        } catch {
          out.push("blocked");
        }
        // a JSON request: the preflight is not answered, so the browser never sends it
        try {
          await fetch(target, { method: "POST", headers: { "Content-Type": "application/json" }, body });
          out.push("sent");
        } catch {
          out.push("blocked");
        }
        return out;
      },
      { target, pairId: pairs[0]! },
    );
    assert.deepEqual(results, ["blocked", "blocked"]);
    assert.equal(store.votesFor(pairs[0]!).length, 0, "no vote from the other origin");
    // the same request from the app's own origin works
    await page.goto(`${h.url}label`);
    const status = await page.evaluate(async (pairId) => {
      const r = await fetch("/api/label/vote", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ rater: "ann", pairId, choice: "b" }) });
      return r.status;
    }, pairs[0]!);
    assert.equal(status, 200);
    assert.equal(store.votesFor(pairs[0]!).length, 1);
  } finally {
    await ctx.close();
    await h.close();
    store.close();
    evil.close();
  }
});

test("with a token: the printed URL logs the browser in once (cookie), pages and API then work", async () => {
  const { store, pairs } = await makeStore(join(dir, "token.db"), 2);
  const h = await startServer({ store, port: 0, token: "s3cret-token-for-test" });
  const ctx = await browser.newContext();
  try {
    const page = await ctx.newPage();
    const denied = await page.goto(`${h.url}label`);
    assert.equal(denied!.status(), 401);
    await ctx.addInitScript(() => localStorage.setItem("ddpo.rater", "tok"));
    await page.goto(h.openUrl);
    assert.equal(new URL(page.url()).search, "", "the token is gone from the address bar");
    await page.waitForSelector("#pair[data-pair-id]");
    await pressAndWait(page, "1", 1);
    assert.equal(store.votesFor(pairs[0]!).length + store.votesFor(pairs[1]!).length, 1);
  } finally {
    await ctx.close();
    await h.close();
    store.close();
  }
});

test("compare page: base | tuned per sample with scores; the report embedded, its script not run", async () => {
  const evalDir = join(dir, "eval");
  await makeEvalDir(evalDir, 4);
  const { store } = await makeStore(join(dir, "cmp.db"), 1);
  const h = await startServer({ store, port: 0, evalDir });
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  try {
    const page = await ctx.newPage();
    await page.goto(`${h.url}compare`);
    await page.waitForSelector(".cmp-row[data-index='3']");
    await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>(".cmp-row img")].every((i) => i.complete && i.naturalWidth === 32));
    assert.equal(await page.locator(".cmp-row[data-index]").count(), 4);
    assert.equal(await page.textContent(".cmp-row[data-index='1'] .p"), "a red apple");
    // sample 1: classifier 0.3 → 0.55 (+0.25)
    assert.match((await page.textContent(".cmp-row[data-index='1'] .scores"))!, /classifier0\.30\.55\+0\.25/);
    await page.selectOption("#sort", "gain");
    assert.equal(await page.getAttribute(".cmp-row[data-index]:first-of-type", "data-index"), "0", "classifier gains 0.3, 0.25, 0.2, 0.15: sample 0 first");
    await page.selectOption("#sort", "order");
    await page.click("details.report summary");
    const frame = page.frameLocator("#report-frame");
    await frame.locator("h1").waitFor();
    const report = page.frames().find((f) => f.url().endsWith("/eval/report"))!;
    const imgs = await report.evaluate(() => [...document.images].map((i) => [i.getAttribute("src"), i.naturalWidth]));
    assert.deepEqual(imgs, [["/api/eval/image/0/base", 32], ["/api/eval/image/1/tuned", 32], ["../../etc/passwd", 0]]);
    assert.notEqual(await report.evaluate(() => document.title), "ran", "the report's scripts do not run");
    await shot(page, "compare");
  } finally {
    await ctx.close();
    await h.close();
    store.close();
  }
});

test("run page: charts from the metrics log, live updates over server-sent events, validation grids", async () => {
  const runDir = join(dir, "run");
  await makeRunDir(runDir, 60);
  const { store } = await makeStore(join(dir, "run.db"), 1);
  const h = await startServer({ store, port: 0, runDir, pollMs: 100 });
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  try {
    const page = await ctx.newPage();
    await page.goto(`${h.url}run`);
    await page.waitForFunction(() => document.body.getAttribute("data-steps") === "60");
    for (const m of ["loss", "implicitAcc", "margin", "lr"]) {
      const d = await page.getAttribute(`.chart[data-metric='${m}'] path.smooth`, "d");
      assert.ok(d && d.split("L").length >= 30, `${m} chart has a line`);
    }
    await page.waitForFunction(() => (document.getElementById("grid-img") as HTMLImageElement).naturalWidth === 133);
    assert.match((await page.textContent("#grid-label"))!, /step 50 \(2 of 2\)/);
    // the trainer appends: the page follows without a reload
    appendFileSync(join(runDir, "metrics.jsonl"), [61, 62, 63].map((s) => JSON.stringify(stepRecord(s))).join("\n") + "\n");
    await page.waitForFunction(() => document.body.getAttribute("data-steps") === "63");
    writeFileSync(join(runDir, "validation", "step-000100.png"), await tinyPng(3));
    await page.waitForFunction(() => /step 100 \(3 of 3\)/.test(document.getElementById("grid-label")!.textContent!));
    appendFileSync(join(runDir, "metrics.jsonl"), JSON.stringify({ type: "done", step: 63, outputDir: runDir, finalPath: join(runDir, "final"), skippedSteps: 0, elapsedSec: 120, time: Date.now() }) + "\n");
    await page.waitForFunction(() => document.getElementById("live-text")!.textContent!.startsWith("finished"));
    // back to the 50-step grid for the screenshot
    await page.fill("#grid-step", "1");
    await page.waitForFunction(() => (document.getElementById("grid-img") as HTMLImageElement).naturalWidth === 133);
    await shot(page, "run");
  } finally {
    await ctx.close();
    await h.close();
    store.close();
  }
});
