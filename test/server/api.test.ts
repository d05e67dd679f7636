// The web app's JSON API and guards, without a browser: votes, undo, images by id, traversal,
// body limits, token, Host and same-origin checks, exports read back by the project's readers,
// the eval and run folders, and a server killed mid-vote.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineCommand } from "citty";
import { runCli } from "../../src/cli/run.js";
import { commands } from "../../src/cli/commands/index.js";
import { JsonlSource } from "../../src/data/jsonl.js";
import { PickapicSource } from "../../src/data/pickapic.js";
import { PreferenceStore } from "../../src/data/store.js";
import { checkBinding, createApp, EvalFolder, MetricsTail, startServer, swappedFor } from "../../src/server/index.js";
import { makeEvalDir, makeRunDir, makeStore, stepRecord } from "./_fixtures.js";

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "ddpo-api-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "Content-Type": "application/json", ...headers },
  body: typeof body === "string" ? body : JSON.stringify(body),
});

test("votes, progress, undo and their validation", async () => {
  const { store, pairs } = await makeStore(join(dir, "votes.db"), 3);
  const { app } = createApp({ store });
  try {
    let r = await app.request("/api/label/next?rater=ann");
    assert.equal(r.status, 200);
    let b = (await r.json()) as { pair: { id: number; left: { side: string; url: string }; right: { side: string } }; progress: { done: number; total: number } };
    assert.deepEqual(b.progress, { done: 0, total: 3 });
    assert.equal(b.pair.id, pairs[0]);
    assert.equal(b.pair.left.side, swappedFor(pairs[0]!, "ann") ? "b" : "a", "the left/right order is the per-rater coin");
    assert.notEqual(b.pair.left.side, b.pair.right.side);

    r = await app.request("/api/label/vote", json({ rater: "ann", pairId: pairs[0], choice: "b" }));
    assert.equal(r.status, 200);
    b = (await r.json()) as typeof b;
    assert.deepEqual(b.progress, { done: 1, total: 3 });
    assert.equal(b.pair.id, pairs[1]);
    assert.deepEqual(store.votesFor(pairs[0]!).map((v) => [v.rater, v.choice]), [["ann", "b"]]);

    await app.request("/api/label/vote", json({ rater: "ann", pairId: pairs[1], choice: "tie" }));
    r = await app.request("/api/label/undo", json({ rater: "ann" }));
    const u = (await r.json()) as { undone: number; pair: { id: number }; progress: { done: number } };
    assert.equal(u.undone, pairs[1], "undo removes the rater's latest vote");
    assert.equal(u.pair.id, pairs[1]);
    assert.equal(u.progress.done, 1);
    assert.equal(store.votesFor(pairs[1]!).length, 0);
    assert.equal(store.votesFor(pairs[0]!).length, 1, "the earlier vote stays");
    r = await app.request("/api/label/undo", json({ rater: "nobody" }));
    assert.equal(((await r.json()) as { undone: null }).undone, null);

    const bad: [RequestInit, number, RegExp][] = [
      [json({ rater: "ann", pairId: pairs[0], choice: "left" }), 400, /choice/],
      [json({ rater: "", pairId: pairs[0], choice: "a" }), 400, /rater/],
      [json({ rater: "x".repeat(65), pairId: pairs[0], choice: "a" }), 400, /rater.*64/],
      [json({ rater: "a\u0007b", pairId: pairs[0], choice: "a" }), 400, /control/],
      [json({ rater: "ann", pairId: 1.5, choice: "a" }), 400, /pairId/],
      [json({ rater: "ann", pairId: pairs[0], choice: "a", extra: 1 }), 400, /extra/],
      [json("{not json"), 400, /not valid JSON/],
      [json({ rater: "ann", pairId: 999, choice: "a" }), 404, /no pair 999/],
      [{ method: "POST", headers: { "Content-Type": "text/plain" }, body: "{}" }, 415, /application\/json/],
      [{ method: "GET" }, 404, /no route GET/],
    ];
    for (const [init, status, re] of bad) {
      const res = await app.request("/api/label/vote", init);
      assert.equal(res.status, status, String(init.body));
      assert.match(((await res.json()) as { error: string }).error, re);
    }
    assert.equal((await app.request("/api/label/next")).status, 400, "next needs ?rater=");
  } finally {
    store.close();
  }
});

test("images by id only; traversal attempts get 404 and no file content", async () => {
  const { store } = await makeStore(join(dir, "img.db"), 1);
  const evalDir = join(dir, "eval-trav");
  await makeEvalDir(evalDir, 2);
  // samples whose paths leave the folder (directly and through a symlink) are never served
  writeFileSync(join(dir, "secret.png"), "top secret");
  symlinkSync(join(dir, "secret.png"), join(evalDir, "images", "link.png"));
  const e = JSON.parse(readFileSync(join(evalDir, "eval.json"), "utf8")) as { samples: Record<string, unknown>[] };
  e.samples.push({ prompt: "x", seed: 0, base: "../secret.png", tuned: "images/link.png" });
  writeFileSync(join(evalDir, "eval.json"), JSON.stringify(e));
  const runDir = join(dir, "run-trav");
  await makeRunDir(runDir, 3);
  const { app } = createApp({ store, evalDir, runDir });
  try {
    const r = await app.request("/api/image/1");
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "image/png");
    assert.deepEqual(new Uint8Array(await r.arrayBuffer()), store.imageBytes(1));
    assert.equal((await app.request("/api/eval/image/1/tuned")).status, 200);
    assert.equal((await app.request("/api/run/validation/50")).status, 200);
    const paths = [
      "/api/image/999",
      "/api/image/..%2F..%2Fetc%2Fpasswd",
      "/api/image/%2Fetc%2Fpasswd",
      "/api/image/1e3",
      "/api/image/-1",
      "/static/..%2F..%2Fpackage.json",
      "/static/%2E%2E%2Fpackage.json",
      "/api/eval/image/0/..%2F..%2Feval.json",
      "/api/eval/image/..%2Feval.json/base",
      "/api/eval/image/2/base",
      "/api/eval/image/2/tuned",
      "/api/eval/image/9/base",
      "/api/run/validation/..%2Fmetrics.jsonl",
      "/api/run/validation/7",
    ];
    for (const p of paths) {
      const res = await app.request(p);
      assert.equal(res.status, 404, p);
      const text = await res.text();
      assert.doesNotMatch(text, /top secret|root:|"dependencies"|"samples"/, p);
    }
  } finally {
    store.close();
  }
});

test("bodies over the limit get 413, with or without Content-Length", async () => {
  const { store, pairs } = await makeStore(join(dir, "big.db"), 1);
  const h = await startServer({ store, port: 0, maxBodyBytes: 1024 });
  try {
    const big = JSON.stringify({ rater: "a".repeat(2000), pairId: pairs[0], choice: "a" });
    let r = await fetch(`${h.url}api/label/vote`, json(big));
    assert.equal(r.status, 413);
    assert.match(((await r.json()) as { error: string }).error, /over 1024 bytes/);
    // chunked: no Content-Length, the limit applies while reading
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < 8; i++) c.enqueue(new TextEncoder().encode(" ".repeat(512)));
        c.close();
      },
    });
    r = await fetch(`${h.url}api/label/vote`, { method: "POST", headers: { "Content-Type": "application/json" }, body: stream, duplex: "half" } as RequestInit);
    assert.equal(r.status, 413);
    assert.equal(store.counts().votes, 0);
    r = await fetch(`${h.url}api/label/vote`, json({ rater: "ann", pairId: pairs[0], choice: "a" }));
    assert.equal(r.status, 200, "a normal vote still works");
  } finally {
    await h.close();
    store.close();
  }
});

test("token: required on every request; ?token= sets a cookie once; header and bearer work", async () => {
  const { store } = await makeStore(join(dir, "tok.db"), 1);
  const token = "correct-horse-battery";
  const { app } = createApp({ store, token, host: "0.0.0.0" });
  try {
    for (const p of ["/label", "/static/app.css", "/api/image/1", "/api/label/next?rater=a"]) assert.equal((await app.request(p)).status, 401, p);
    assert.equal((await app.request("/label?token=wrong-token-x")).status, 401);
    const r = await app.request("/label?token=" + token + "&x=1");
    assert.equal(r.status, 303);
    assert.equal(r.headers.get("location"), "/label?x=1", "the token leaves the address bar");
    const cookie = r.headers.get("set-cookie")!;
    assert.match(cookie, /ddpo_token=correct-horse-battery/);
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.equal((await app.request("/label", { headers: { Cookie: cookie.split(";")[0]! } })).status, 200);
    assert.equal((await app.request("/api/image/1", { headers: { Authorization: `Bearer ${token}` } })).status, 200);
    assert.equal((await app.request("/api/image/1", { headers: { "x-diffusion-dpo-token": token } })).status, 200);
    assert.equal((await app.request("/api/image/1", { headers: { "x-diffusion-dpo-token": token + "x" } })).status, 401);
    // with a token any Host is fine (the token is the protection)
    assert.equal((await app.request("http://192.168.1.5:8787/api/image/1", { headers: { "x-diffusion-dpo-token": token } })).status, 200);
  } finally {
    store.close();
  }
});

test("without a token: loopback Host only (DNS rebinding); same-origin POSTs only", async () => {
  const { store, pairs } = await makeStore(join(dir, "origin.db"), 1);
  const { app } = createApp({ store });
  try {
    assert.equal((await app.request("http://127.0.0.1:8787/label")).status, 200);
    assert.equal((await app.request("http://localhost:8787/label")).status, 200);
    const rebound = await app.request("http://attacker.example:8787/label");
    assert.equal(rebound.status, 403);
    assert.match(((await rebound.json()) as { error: string }).error, /Host attacker\.example:8787 refused/);

    const vote = { rater: "ann", pairId: pairs[0], choice: "a" };
    const refused: Record<string, string>[] = [
      { Origin: "http://evil.example" },
      { Origin: "null" },
      { Origin: "http://localhost:9999" },
      { "Sec-Fetch-Site": "cross-site" },
      { "Sec-Fetch-Site": "same-site" },
    ];
    for (const h of refused) {
      const r = await app.request("http://localhost:8787/api/label/vote", json(vote, h));
      assert.equal(r.status, 403, JSON.stringify(h));
      assert.match(((await r.json()) as { error: string }).error, /cross-origin POST refused/);
    }
    assert.equal(store.counts().votes, 0);
    const ok = await app.request("http://localhost:8787/api/label/vote", json(vote, { Origin: "http://localhost:8787", "Sec-Fetch-Site": "same-origin" }));
    assert.equal(ok.status, 200);
    assert.equal(store.counts().votes, 1);
    const page = await app.request("http://localhost:8787/label");
    assert.match(page.headers.get("content-security-policy")!, /script-src 'self'/);
    assert.equal(page.headers.get("x-content-type-options"), "nosniff");
  } finally {
    store.close();
  }
});

test("binding: another address needs a token (library and CLI)", async () => {
  assert.throws(() => checkBinding("0.0.0.0", undefined), /--host 0\.0\.0\.0 exposes .* --token/);
  assert.throws(() => checkBinding("192.168.1.5", undefined), /--token/);
  assert.throws(() => checkBinding("0.0.0.0", "short"), /at least 8 characters/);
  for (const h of ["127.0.0.1", "localhost", "::1", "127.0.0.2"]) assert.doesNotThrow(() => checkBinding(h, undefined));
  assert.doesNotThrow(() => checkBinding("0.0.0.0", "a-long-enough-token"));
  await assert.rejects(startServer({ db: join(dir, "never.db"), host: "0.0.0.0", port: 0 }), /--token/);

  const root = defineCommand({ meta: { name: "diffusion-dpo" }, subCommands: commands });
  let err = "";
  const code = await runCli(root, ["serve", "--db", join(dir, "cli.db"), "--host", "0.0.0.0", "--port", "0"], { stdout: () => {}, stderr: (t) => (err += t) });
  assert.equal(code, 1);
  assert.match(err, /^error: --host 0\.0\.0\.0 exposes the app beyond this machine; give --token/);
  err = "";
  assert.equal(await runCli(root, ["serve", "--eval", join(dir, "nope")], { stdout: () => {}, stderr: (t) => (err += t) }), 1);
  assert.match(err, /--eval .*nope: no eval\.json there/);
});

test("exports: JSONL and Pick-a-Pic parquet read back by the project's readers", async () => {
  const file = join(dir, "exp.db");
  const { store, pairs } = await makeStore(file, 4);
  const { app } = createApp({ store });
  try {
    store.vote(pairs[0]!, "ann", "a");
    store.vote(pairs[1]!, "ann", "b");
    store.vote(pairs[2]!, "ann", "tie");
    // pairs[3] unlabelled
    let r = await app.request("/api/export/jsonl", json({}));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("x-pairs"), "2");
    assert.match(r.headers.get("content-disposition")!, /attachment; filename="preferences.jsonl"/);
    const jsonl = join(dir, "exp.jsonl");
    writeFileSync(jsonl, Buffer.from(await r.arrayBuffer()));
    const rows = await new JsonlSource(jsonl).readUnit(0);
    const got = rows.map((x) => (x.kind === "pair" ? [x.pair.prompt, x.pair.chosen, x.pair.rejected] : x.kind));
    const p0 = store.pair(pairs[0]!)!;
    const p1 = store.pair(pairs[1]!)!;
    const img = (id: number) => join(dir, "exp.db.export-images", `${id}.png`);
    assert.deepEqual(got, [
      [p0.prompt, img(p0.imageA), img(p0.imageB)],
      [p1.prompt, img(p1.imageB), img(p1.imageA)],
    ]);
    assert.deepEqual(new Uint8Array(readFileSync(img(p1.imageB))), store.imageBytes(p1.imageB));

    r = await app.request("/api/export/parquet", json({ includeTies: true }));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("x-pairs"), "3");
    const pq = join(dir, "exp.parquet");
    writeFileSync(pq, Buffer.from(await r.arrayBuffer()));
    const src = new PickapicSource(pq, { dropTies: false });
    const prs = (await src.readUnit(0)).filter((x) => x.kind === "pair").map((x) => (x.kind === "pair" ? [x.pair.prompt, x.pair.tie] : null));
    assert.deepEqual(prs, [[p0.prompt, false], [p1.prompt, false], [store.pair(pairs[2]!)!.prompt, true]]);
    assert.equal((await app.request("/api/export/parquet", json({ labels: "robot" }))).status, 400);
  } finally {
    store.close();
  }
  const mem = new PreferenceStore(":memory:");
  try {
    const r = await createApp({ store: mem }).app.request("/api/export/jsonl", json({}));
    assert.equal(r.status, 400, "an in-memory store has nowhere lasting to put exported images");
  } finally {
    mem.close();
  }
});

test("eval folder: view, report links rewritten to sample indices, clear errors", async () => {
  const evalDir = join(dir, "eval-view");
  await makeEvalDir(evalDir, 3);
  const f = new EvalFolder(evalDir);
  const v = f.view();
  assert.deepEqual(v.rewards, ["classifier", "clip"]);
  assert.equal(v.samples.length, 3);
  assert.deepEqual(v.samples[2], { index: 2, prompt: "a rocket ship", seed: 0, category: "Smileys & Emotion", scores: { classifier: { base: 0.4, tuned: 0.6 }, clip: { base: 0.3, tuned: 0.29 } } });
  assert.equal(v.hasReport, true);
  const html = f.report()!;
  assert.match(html, /<img src="\/api\/eval\/image\/0\/base"><img src='\/api\/eval\/image\/1\/tuned'><img src="\.\.\/\.\.\/etc\/passwd">/);
  writeFileSync(join(evalDir, "eval.json"), JSON.stringify({ samples: [{ prompt: "p", seed: "zero", base: "a.png", tuned: "b.png" }] }));
  assert.throws(() => f.view(), /eval\.json: samples\.0\.seed: /);
  assert.throws(() => new EvalFolder(join(dir, "missing")), /eval\.json does not exist; give --eval/);
});

test("metrics tail: complete lines only, corrupt lines skipped, restart on truncation", () => {
  const file = join(dir, "tail", "metrics.jsonl");
  mkdirSync(join(dir, "tail"));
  const t = new MetricsTail(file);
  assert.deepEqual(t.poll(), { reset: false, records: [] }, "no file yet");
  const line = JSON.stringify(stepRecord(1));
  writeFileSync(file, line.slice(0, 40));
  assert.deepEqual(t.poll().records, [], "half a line is not read");
  appendFileSync(file, line.slice(40) + "\n{corrupt\n" + JSON.stringify({ type: "step", step: 2, note: "ünïcödé" }) + "\n");
  const r = t.poll();
  assert.deepEqual(r.records.map((x) => x.step), [1, 2]);
  assert.equal(r.records[1]!.note, "ünïcödé");
  assert.deepEqual(t.poll().records, []);
  writeFileSync(file, JSON.stringify({ type: "step", step: 1 }) + "\n");
  assert.deepEqual(t.poll(), { reset: true, records: [{ type: "step", step: 1 }] });
});

test("a server killed mid-vote leaves a consistent store holding every acknowledged vote", async () => {
  const file = join(dir, "kill.db");
  const { store, pairs } = await makeStore(file, 12);
  store.close();
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve", "--db", file, "--port", "0", "--json"], { stdio: ["ignore", "pipe", "pipe"] });
  try {
    const info = await new Promise<{ url: string }>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("\n")) resolve(JSON.parse(out.split("\n")[0]!) as { url: string });
      });
      child.once("exit", (code) => reject(new Error(`serve exited early (${code})`)));
    });
    const acked: [number, string][] = [];
    const raters = Array.from({ length: 20 }, (_, i) => `r${i}`);
    let sent = 0;
    const votes = raters.flatMap((rater) => pairs.map((id) => ({ rater, pairId: id, choice: (id + rater.length) % 2 ? "a" : "b" })));
    // a few acknowledged for sure, then a burst that the kill cuts through
    for (const v of votes.splice(0, 3)) {
      const r = await fetch(`${info.url}api/label/vote`, json(v));
      assert.equal(r.status, 200);
      acked.push([v.pairId, v.rater]);
    }
    const inflight = votes.map(async (v, i) => {
      await new Promise((r) => setTimeout(r, i % 60));
      sent++;
      try {
        const r = await fetch(`${info.url}api/label/vote`, json(v));
        if (r.status === 200) acked.push([v.pairId, v.rater]);
      } catch {
        // the server died under this request
      }
    });
    await new Promise((r) => setTimeout(r, 30));
    child.kill("SIGKILL");
    await Promise.all(inflight);
    assert.ok(sent > 0);
    const s = new PreferenceStore(file);
    try {
      assert.equal((s.db.prepare("PRAGMA integrity_check").get() as { integrity_check: string }).integrity_check, "ok");
      const n = s.counts().votes;
      for (const [pairId, rater] of acked) assert.equal(s.votesFor(pairId).filter((v) => v.rater === rater).length, 1, `acknowledged vote ${rater}/${pairId} is stored`);
      assert.ok(n >= acked.length && n <= raters.length * pairs.length, `${n} votes stored, ${acked.length} acknowledged`);
      assert.ok(acked.length < raters.length * pairs.length, "the kill interrupted the voting");
    } finally {
      s.close();
    }
  } finally {
    child.kill("SIGKILL");
  }
});
