// The blind A/B page in a real browser (Debian's chromium through playwright-core): two raters at
// once by keyboard, a reload mid-session resuming where the rater left off, and a rater who always
// picks the tuned image (found by hashing the shown images against the eval folder's files) over
// 64 comparisons: both layouts occur, match the logged assignment, and the tally shows 100%.
// Screenshots go to SCREENSHOT_DIR (human-ab.png, human-results.png).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { PreferenceStore } from "../../src/data/store.js";
import { HumanEvalStore } from "../../src/eval/human.js";
import { startServer, type ServerHandle } from "../../src/server/index.js";
import { makeEvalDir } from "./_fixtures.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR ?? join(tmpdir(), "diffusion-dpo-screens");

let browser: Browser;
let dir: string;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (or set CHROMIUM_PATH)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--headless=new"] });
  dir = mkdtempSync(join(tmpdir(), "ddpo-human-browser-"));
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
});

after(async () => {
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function shot(page: Page, name: string): Promise<void> {
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  assert.ok(statSync(path).size > 5000, `${path} looks empty`);
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function serveStudy(name: string, n: number): Promise<{ h: ServerHandle; evalDir: string; db: string; store: PreferenceStore }> {
  const evalDir = join(dir, name);
  await makeEvalDir(evalDir, n);
  const store = new PreferenceStore(":memory:");
  const h = await startServer({ store, port: 0, evalDir, blind: true, humanSeed: `browser-${name}` });
  return { h, evalDir, db: join(evalDir, "human.sqlite"), store };
}

async function openAs(rater: string, url: string): Promise<{ page: Page; close: () => Promise<void> }> {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  await ctx.addInitScript((r) => localStorage.setItem("ddpo.rater", r), rater);
  const page = await ctx.newPage();
  await page.goto(url);
  await page.waitForSelector("#comparison[data-comparison-id]");
  return { page, close: () => ctx.close() };
}

const shownId = async (page: Page) => Number(await page.getAttribute("#comparison", "data-comparison-id"));

/** The slot showing the tuned image: the shown images' sha256 (in the page) against the folder's files. */
async function tunedSlot(page: Page, evalDir: string): Promise<"left" | "right"> {
  const id = await shownId(page);
  // a string, not a function: tsx would wrap a named inner function in a __name helper the page lacks
  const [left, right] = (await page.evaluate(`Promise.all(["left-img", "right-img"].map(async (el) => {
    const bytes = await (await fetch(document.getElementById(el).src)).arrayBuffer();
    return [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
  }))`)) as [string, string];
  const tuned = sha(readFileSync(join(evalDir, "images", "tuned", `${id}.png`)));
  const base = sha(readFileSync(join(evalDir, "images", "base", `${id}.png`)));
  if (left === tuned && right === base) return "left";
  if (right === tuned && left === base) return "right";
  throw new Error(`comparison ${id}: the shown images are not its base and tuned`);
}

/** Presses the keys, then Enter, and waits for the progress to reach `done`. */
async function answer(page: Page, keys: string[], done: number, total: number): Promise<void> {
  for (const k of keys) await page.keyboard.press(k);
  await page.keyboard.press("Enter");
  await page.waitForFunction((t) => document.getElementById("progress-text")!.textContent === t, `${done} of ${total}`, { timeout: 5000 });
}

function storedVotes(db: string, rater: string): Map<number, { tuned_side: string; general: string; appeal: string; alignment: string }> {
  const s = new HumanEvalStore(db, { readonly: true });
  try {
    const rows = s.db.prepare("SELECT comparison_id, tuned_side, general, appeal, alignment FROM votes WHERE rater = ?").all(rater) as { comparison_id: number; tuned_side: string; general: string; appeal: string; alignment: string }[];
    return new Map(rows.map(({ comparison_id, ...r }) => [comparison_id, r]));
  } finally {
    s.close();
  }
}

test("two raters at once by keyboard: every answer stored once, with the layout they saw", async () => {
  const N = 8;
  const { h, evalDir, db, store } = await serveStudy("two", N);
  try {
    // ann: 1 2 3 → left, right, tie. bob: 3, ↑, 1, 2, 2 → tie on general corrected to left; right; right
    const plans: Record<string, { keys: string[]; expect: [string, string, string] }> = {
      ann: { keys: ["1", "2", "3"], expect: ["left", "right", "tie"] },
      bob: { keys: ["3", "ArrowUp", "1", "2", "2"], expect: ["left", "right", "right"] },
    };
    const run = async (rater: string) => {
      const { page, close } = await openAs(rater, `${h.url}human`);
      const seen = new Map<number, string>();
      try {
        assert.equal(await page.textContent("#progress-text"), `0 of ${N}`);
        for (let i = 0; i < N; i++) {
          const id = await shownId(page);
          assert.ok(!seen.has(id), `${rater} sees comparison ${id} once`);
          seen.set(id, await tunedSlot(page, evalDir));
          if (rater === "ann" && i === 0) {
            await page.waitForFunction(() => (document.getElementById("left-img") as HTMLImageElement).naturalWidth > 0 && (document.getElementById("right-img") as HTMLImageElement).naturalWidth > 0);
            await page.keyboard.press("1");
            await shot(page, "human-ab");
            await answer(page, ["2", "3"], 1, N);
            continue;
          }
          await answer(page, plans[rater]!.keys, i + 1, N);
        }
        await page.waitForSelector("#done:not(.hidden)");
      } finally {
        await close();
      }
      return seen;
    };
    const [ann, bob] = await Promise.all([run("ann"), run("bob")]);
    for (const [rater, seen] of [["ann", ann], ["bob", bob]] as const) {
      const votes = storedVotes(db, rater);
      assert.equal(votes.size, N, `${rater}: one stored answer per comparison`);
      for (const [id, side] of seen) {
        const v = votes.get(id)!;
        assert.deepEqual([v.general, v.appeal, v.alignment], plans[rater]!.expect, `${rater} comparison ${id}`);
        assert.equal(v.tuned_side, side, "stored layout = the images the browser showed");
      }
    }
  } finally {
    await h.close();
    store.close();
  }
});

test("a reload mid-session resumes at the same comparison with the answers so far stored", async () => {
  const N = 6;
  const { h, db, store } = await serveStudy("reload", N);
  try {
    const { page, close } = await openAs("cy", `${h.url}human`);
    try {
      const answered: number[] = [];
      for (let i = 0; i < 2; i++) {
        answered.push(await shownId(page));
        await answer(page, ["1", "1", "1"], i + 1, N);
      }
      const third = await shownId(page);
      await page.keyboard.press("2");
      await page.keyboard.press("Enter"); // incomplete: nothing is sent
      assert.equal(await page.isDisabled("#submit"), true);
      assert.equal(await page.textContent("#progress-text"), `2 of ${N}`);
      await page.reload();
      await page.waitForFunction((t) => document.getElementById("progress-text")!.textContent === t, `2 of ${N}`);
      assert.equal(await page.textContent("#rater-name"), "cy");
      assert.equal(await shownId(page), third, "the rater's order is the same after the reload");
      assert.equal(await page.locator("button.ans[aria-pressed=true]").count(), 0, "an unsent answer does not survive the reload");
      assert.deepEqual([...storedVotes(db, "cy").keys()].sort(), [...answered].sort());
      for (let i = 2; i < N; i++) await answer(page, ["3", "3", "3"], i + 1, N);
      await page.waitForSelector("#done:not(.hidden)");
      assert.equal(storedVotes(db, "cy").size, N);
    } finally {
      await close();
    }
  } finally {
    await h.close();
    store.close();
  }
});

test("always picking the tuned image: both layouts occur over 64 comparisons, the tally undoes them (100%)", async () => {
  const N = 64;
  const { h, evalDir, db, store } = await serveStudy("oracle", N);
  try {
    const { page, close } = await openAs("oracle", `${h.url}human`);
    const seen = new Map<number, "left" | "right">();
    try {
      for (let i = 0; i < N; i++) {
        const id = await shownId(page);
        const side = await tunedSlot(page, evalDir);
        seen.set(id, side);
        const k = side === "left" ? "1" : "2";
        await answer(page, [k, k, k], i + 1, N);
      }
      await page.waitForSelector("#done:not(.hidden)");
      const lefts = [...seen.values()].filter((s) => s === "left").length;
      // seeded coin ("browser-oracle"); a fair coin gives 32 ± 4, both orders must occur
      assert.ok(lefts >= 16 && lefts <= 48, `tuned on the left ${lefts} of ${N} times`);
      const s = new HumanEvalStore(db, { readonly: true });
      try {
        const logged = s.db.prepare("SELECT comparison_id, tuned_side FROM assignments WHERE rater = 'oracle'").all() as { comparison_id: number; tuned_side: string }[];
        assert.equal(logged.length, N);
        for (const r of logged) {
          assert.equal(r.tuned_side, seen.get(r.comparison_id), `comparison ${r.comparison_id}: logged layout = shown`);
          assert.equal(r.tuned_side, s.coin(r.comparison_id, "oracle"), "logged layout = the seeded coin");
        }
      } finally {
        s.close();
      }

      await page.click("#done a[href='/human/results']");
      await page.waitForSelector(".hr-card");
      for (const q of ["general", "appeal", "alignment"]) {
        assert.equal(await page.textContent(`.hr-card[data-q=${q}] [data-role=rate]`), "100.0%", q);
        assert.match((await page.textContent(`.hr-card[data-q=${q}] [data-role=majority]`))!, /^majority of raters: 100\.0% of 64 comparisons/);
      }
      await page.waitForFunction(() => document.querySelectorAll("#hr-rows tr").length === 65);
      await shot(page, "human-results");
    } finally {
      await close();
    }
  } finally {
    await h.close();
    store.close();
  }
});
