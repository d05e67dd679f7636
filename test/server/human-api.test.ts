// The blind A/B human evaluation through the JSON API (no browser): nothing served before a vote
// names base or tuned; the image on each slot is the one the logged layout says; votes stored =
// votes acknowledged, each comparison once per rater; bad bodies get a 4xx naming the field; the
// results on a constructed study; blind mode turns the Compare routes off.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Hono } from "hono";
import { PreferenceStore } from "../../src/data/store.js";
import { HumanEvalStore } from "../../src/eval/human.js";
import serveCommand from "../../src/cli/commands/serve.js";
import { createApp } from "../../src/server/index.js";
import { cliRunner } from "../cli/_capture.js";
import { makeEvalDir } from "./_fixtures.js";

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "ddpo-human-api-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "Content-Type": "application/json", ...headers },
  body: typeof body === "string" ? body : JSON.stringify(body),
});
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface Next {
  comparison: { id: number; prompt: string; left: { url: string }; right: { url: string } } | null;
  progress: { done: number; total: number };
  questions: { key: string; text: string }[];
  blind: boolean;
}

/** Which slot shows the tuned image, found the way a rater cannot: comparing bytes with the eval folder's files. */
async function tunedSlot(app: Hono, evalDir: string, c: NonNullable<Next["comparison"]>): Promise<"left" | "right"> {
  const left = new Uint8Array(await (await app.request(c.left.url)).arrayBuffer());
  const right = new Uint8Array(await (await app.request(c.right.url)).arrayBuffer());
  const base = sha(readFileSync(join(evalDir, "images", "base", `${c.id}.png`)));
  const tuned = sha(readFileSync(join(evalDir, "images", "tuned", `${c.id}.png`)));
  if (sha(left) === tuned && sha(right) === base) return "left";
  if (sha(right) === tuned && sha(left) === base) return "right";
  throw new Error(`comparison ${c.id}: the two slots are not its base and tuned images`);
}

function setup(name: string, n: number, extra: { blind?: boolean } = {}) {
  const evalDir = join(dir, name);
  const store = new PreferenceStore(":memory:");
  return makeEvalDir(evalDir, n).then(() => {
    const web = createApp({ store, evalDir, humanSeed: `seed-${name}`, ...extra });
    return { evalDir, app: web.app, close: () => { web.close(); store.close(); }, db: join(evalDir, "human.sqlite") };
  });
}

test("A/B: blind payloads, slots match the logged layout, both layouts occur, votes stored = acknowledged", async () => {
  const { evalDir, app, close, db } = await setup("ab", 24);
  try {
    const seen: Record<string, Map<number, "left" | "right">> = { ann: new Map(), bob: new Map() };
    const acked: { rater: string; comparison: number; general: string; appeal: string; alignment: string }[] = [];
    // two raters interleaved, one request after the other's
    for (let step = 0; step < 24; step++) {
      for (const rater of ["ann", "bob"]) {
        const r = await app.request(`/api/human/next?rater=${rater}`);
        assert.equal(r.status, 200);
        const text = await r.text();
        assert.doesNotMatch(text, /tuned|base/i, "the next-comparison payload names neither model");
        const next = JSON.parse(text) as Next;
        assert.deepEqual(next.progress, { done: step, total: 24 });
        assert.deepEqual(next.questions.map((q) => q.key), ["general", "appeal", "alignment"]);
        const c = next.comparison!;
        assert.ok(!seen[rater]!.has(c.id), `${rater} sees comparison ${c.id} once`);
        assert.match(c.left.url, /^\/api\/human\/image\/\d+\/left\?rater=/);
        seen[rater]!.set(c.id, await tunedSlot(app, evalDir, c));
        const body = { rater, comparison: c.id, general: (["left", "right", "tie"] as const)[step % 3]!, appeal: "left", alignment: "tie" };
        const v = await app.request("/api/human/vote", json(body));
        assert.equal(v.status, 200);
        const vt = await v.text();
        assert.doesNotMatch(vt, /tuned|base/i, "the vote's answer names neither model");
        acked.push(body);
      }
    }
    for (const rater of ["ann", "bob"]) {
      const done = (await (await app.request(`/api/human/next?rater=${rater}`)).json()) as Next;
      assert.equal(done.comparison, null, "every comparison answered");
      assert.deepEqual(done.progress, { done: 24, total: 24 });
      const sides = [...seen[rater]!.values()];
      assert.ok(sides.filter((s) => s === "left").length >= 4 && sides.filter((s) => s === "right").length >= 4, `both layouts occur for ${rater}: ${sides.join(",")}`);
    }
    assert.notDeepEqual([...Array(24).keys()].map((i) => seen.ann!.get(i)), [...Array(24).keys()].map((i) => seen.bob!.get(i)), "layouts differ between raters");

    // a second connection to the file: exactly the acknowledged votes, with the layout each rater saw
    const s = new HumanEvalStore(db, { readonly: true });
    try {
      const rows = s.db.prepare("SELECT comparison_id, rater, tuned_side, general, appeal, alignment FROM votes ORDER BY rowid").all() as Record<string, unknown>[];
      assert.equal(rows.length, acked.length);
      const key = (r: { rater: unknown; comparison: unknown }) => `${r.rater}/${r.comparison}`;
      const byKey = new Map(rows.map((r) => [key({ rater: r.rater, comparison: r.comparison_id }), r]));
      for (const a of acked) {
        const r = byKey.get(key(a))!;
        assert.deepEqual([r.general, r.appeal, r.alignment], [a.general, a.appeal, a.alignment]);
        assert.equal(r.tuned_side, seen[a.rater]!.get(a.comparison), "the stored layout is the one the images showed");
      }
      const logged = s.db.prepare("SELECT COUNT(*) AS n FROM assignments").get() as { n: number };
      assert.equal(logged.n, 48, "one logged layout per rater and comparison");
    } finally {
      s.close();
    }
  } finally {
    close();
  }
});

test("A/B: each comparison once per rater, bad bodies rejected naming the field, guards", async () => {
  const { app, close } = await setup("bad", 3);
  try {
    const next = (await (await app.request("/api/human/next?rater=cy")).json()) as Next;
    const id = next.comparison!.id;
    const ok = { rater: "cy", comparison: id, general: "left", appeal: "right", alignment: "tie" };
    assert.equal((await app.request("/api/human/vote", json(ok))).status, 200);
    const dup = await app.request("/api/human/vote", json({ ...ok, general: "right" }));
    assert.equal(dup.status, 409);
    assert.match(((await dup.json()) as { error: string }).error, /^comparison: .*already answered/);

    const bad: [RequestInit, number, RegExp][] = [
      [json({ ...ok, general: undefined }), 400, /^general:/],
      [json({ ...ok, appeal: "up" }), 400, /^appeal: answer left, right or tie/],
      [json({ ...ok, alignment: "a" }), 400, /^alignment:/],
      [json({ ...ok, comparison: -1 }), 400, /^comparison:/],
      [json({ ...ok, comparison: 1.5 }), 400, /^comparison:/],
      [json({ ...ok, comparison: "0" }), 400, /^comparison:/],
      [json({ ...ok, comparison: 99 }), 404, /^comparison: no comparison 99/],
      [json({ ...ok, rater: "" }), 400, /^rater:/],
      [json({ ...ok, rater: "x".repeat(65) }), 400, /^rater: .*64/],
      [json({ ...ok, tunedSide: "left" }), 400, /tunedSide/],
      [json("{nope"), 400, /not valid JSON/],
      [json({ ...ok, pad: "x".repeat(20000) }), 413, /over \d+ bytes/],
      [{ method: "POST", headers: { "Content-Type": "text/plain" }, body: JSON.stringify(ok) }, 415, /application\/json/],
      [json(ok, { "Sec-Fetch-Site": "cross-site" }), 403, /cross-origin/],
      [json(ok, { Origin: "http://evil.example" }), 403, /cross-origin/],
    ];
    for (const [init, status, re] of bad) {
      const r = await app.request("/api/human/vote", init);
      assert.equal(r.status, status, String(init.body).slice(0, 80));
      assert.match(((await r.json()) as { error: string }).error, re);
    }
    assert.equal((await app.request("/api/human/next")).status, 400, "next needs ?rater=");
    assert.equal((await app.request(`/api/human/image/${id}/left`)).status, 400, "images need ?rater=");
    for (const u of [`/api/human/image/${id}/base?rater=cy`, `/api/human/image/${id}/tuned?rater=cy`, "/api/human/image/9/left?rater=cy", "/api/human/image/..%2Feval.json/left?rater=cy"]) {
      assert.equal((await app.request(u)).status, 404, u);
    }
    assert.equal((await app.request("/api/human/results?bootstrap=0")).status, 400);
    assert.equal((await app.request("/api/human/next?rater=cy", { headers: { Host: "evil.example" } })).status, 403, "the Host check covers the A/B routes");
  } finally {
    close();
  }
  const bare = createApp({ store: new PreferenceStore(":memory:") });
  assert.equal((await bare.app.request("/api/human/next?rater=a")).status, 404, "no eval folder, no A/B mode");
  assert.equal((await bare.app.request("/human")).status, 404);
  bare.close();
});

test("results on a constructed study: ties as half, majority, Fleiss' kappa, rewards beside", async () => {
  const { evalDir, app, close } = await setup("results", 4);
  try {
    // in tuned/base/tie terms; comparison i of the fixture: prompts p0 p1 p2 p0
    const plan: Record<string, Record<number, [string, string, string]>> = {
      a: { 0: ["tuned", "tuned", "base"], 1: ["tuned", "tuned", "base"], 2: ["base", "tuned", "base"], 3: ["tie", "tuned", "base"] },
      b: { 0: ["tuned", "tuned", "base"], 1: ["base", "tuned", "base"], 2: ["tie", "tuned", "base"], 3: ["tie", "tuned", "base"] },
    };
    for (const rater of ["a", "b"]) {
      for (;;) {
        const next = (await (await app.request(`/api/human/next?rater=${rater}`)).json()) as Next;
        if (!next.comparison) break;
        const c = next.comparison;
        const t = await tunedSlot(app, evalDir, c);
        const toSlot = (w: string) => (w === "tie" ? "tie" : w === "tuned" ? t : t === "left" ? "right" : "left");
        const [general, appeal, alignment] = plan[rater]![c.id]!.map(toSlot);
        assert.equal((await app.request("/api/human/vote", json({ rater, comparison: c.id, general, appeal, alignment }))).status, 200);
      }
    }
    const r = (await (await app.request("/api/human/results")).json()) as {
      votes: number; comparisons: number; stale: number;
      questions: Record<string, { votes: { rate: number; wins: number; losses: number; ties: number; interval: [number, number] }; majority: { rate: number; wins: number; losses: number; ties: number }; agreement: { kappa: number | null; observed: number } }>;
      rewards: { reward: string; rate: number; agreement: Record<string, { agree: number; decisive: number }> }[];
    };
    assert.equal(r.votes, 8);
    assert.equal(r.comparisons, 4);
    assert.equal(r.stale, 0);
    // general: tuned 3, base 2, tie 3 → (3 + 1.5)/8; majorities: tuned, tie (1 v 1), base, tie → (1 + 1)/4
    const g = r.questions.general!;
    assert.deepEqual([g.votes.wins, g.votes.losses, g.votes.ties], [3, 2, 3]);
    assert.equal(g.votes.rate, 4.5 / 8);
    assert.ok(g.votes.interval[0] <= g.votes.rate && g.votes.rate <= g.votes.interval[1]);
    assert.deepEqual([g.majority.wins, g.majority.losses, g.majority.ties], [1, 1, 2]);
    assert.equal(g.majority.rate, 0.5);
    // κ: (2,0,0) P = 1, (1,1,0) 0, (0,1,1) 0, (0,0,2) 1 → P̄ = ½; totals 3, 2, 3 of 8 → P̄e = 22/64
    assert.ok(Math.abs(g.agreement.kappa! - 5 / 21) < 1e-12, `κ ${g.agreement.kappa} vs 5/21`);
    assert.equal(g.agreement.observed, 0.5);
    assert.equal(r.questions.appeal!.votes.rate, 1, "always the tuned image → 100% after undoing the layout");
    assert.deepEqual(r.questions.appeal!.votes.interval, [1, 1]);
    assert.equal(r.questions.appeal!.agreement.kappa, null, "κ undefined (one category) → null in JSON");
    assert.equal(r.questions.alignment!.votes.rate, 0);
    assert.equal(r.questions.alignment!.majority.rate, 0);
    // the fixture's classifier always scores tuned higher: agrees with majority tuned (0), not base (2)
    const cls = r.rewards.find((x) => x.reward === "classifier")!;
    assert.equal(cls.rate, 1);
    assert.deepEqual(cls.agreement.general, { agree: 1, decisive: 2, rate: 0.5 });
  } finally {
    close();
  }
});

test("blind mode: the Compare page, its API and the report are off; the A/B page stays", async () => {
  const { app, close } = await setup("blind", 2, { blind: true });
  try {
    for (const u of ["/compare", "/api/eval", "/api/eval/image/0/base", "/api/eval/image/0/tuned", "/eval/report"]) {
      const r = await app.request(u);
      assert.equal(r.status, 404, u);
      assert.match(((await r.json()) as { error: string }).error, /blind study/);
    }
    const page = await (await app.request("/human")).text();
    assert.doesNotMatch(page, /href="\/compare"/, "no Compare link in the nav");
    assert.match(page, /href="\/human"/);
    const next = (await (await app.request("/api/human/next?rater=z")).json()) as Next;
    assert.equal(next.blind, true);
    const h = await app.request("/human");
    assert.match(h.headers.get("content-security-policy") ?? "", /script-src 'self'/);
  } finally {
    close();
  }
});

test("serve: --blind and --human-db need --eval", async () => {
  const cli = cliRunner({ serve: serveCommand });
  for (const flag of [["--blind"], ["--human-db", join(dir, "h.sqlite")]]) {
    const r = await cli(["serve", "--port", "0", ...flag]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`${flag[0]} needs --eval DIR`));
  }
});
