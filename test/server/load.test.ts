// The labelling app under load: concurrent raters on loopback, bounded in count and time
// (autocannon from npm drives them). The server runs in its own process, as `serve` does. Every
// acknowledged vote must be stored, exactly once; latency percentiles are printed for the record.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import { PreferenceStore } from "../../src/data/store.js";
import { makeStore } from "./_fixtures.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const RATERS = 16;
const PAIRS = 60;

test(`${RATERS} concurrent raters × ${PAIRS} pairs: votes acknowledged = votes stored, p50 / p99 latency`, async () => {
  const db = join(mkdtempSync(join(tmpdir(), "ddpo-load-")), "pairs.sqlite");
  const { store, pairs } = await makeStore(db, PAIRS);
  store.close();
  const script = `
    import { startServer } from ${JSON.stringify(join(root, "src/server/index.ts"))};
    const s = await startServer({ db: ${JSON.stringify(db)}, port: 0 });
    console.log("URL " + s.url);`;
  const server = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  try {
    const url = await new Promise<string>((ok, fail) => {
      let out = "";
      server.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /URL (\S+)/.exec(out);
        if (m) ok(m[1]!);
      });
      server.on("exit", (code) => fail(new Error(`server exited (${code})`)));
      setTimeout(() => fail(new Error("server did not start in 30 s")), 30_000);
    });
    const origin = new URL(url).origin;
    // one rater per connection; each connection votes every pair once, in its own order
    const result = await autocannon({
      url: `${origin}/api/label/vote`,
      connections: RATERS,
      amount: RATERS * PAIRS,
      maxConnectionRequests: PAIRS,
      timeout: 20,
      headers: { "content-type": "application/json", origin },
      requests: [{
        method: "POST",
        setupRequest: (req, ctx: object) => {
          const context = ctx as Record<string, unknown>;
          context.rater ??= `rater-${Math.random().toString(36).slice(2, 10)}`;
          const k = ((context.k as number | undefined) ?? 0);
          context.k = k + 1;
          const pairId = pairs[(k * 7 + String(context.rater).length) % PAIRS]!;
          return { ...req, body: JSON.stringify({ rater: context.rater, pairId, choice: k % 3 === 0 ? "a" : k % 3 === 1 ? "b" : "tie" }) };
        },
      }],
    });
    const acknowledged = result["2xx"];
    const check = new PreferenceStore(db, { readonly: true });
    const stored = check.counts().votes;
    const perRater = check.db.prepare("SELECT COUNT(*) AS n FROM votes GROUP BY rater, pair_id HAVING n > 1").all();
    check.close();
    process.stderr.write(`# load: ${result.requests.total} requests, ${acknowledged} acknowledged, ${stored} stored, ` +
      `non-2xx ${result.non2xx}, errors ${result.errors}, timeouts ${result.timeouts}; latency p50 ${result.latency.p50} ms, ` +
      `p99 ${result.latency.p99} ms, max ${result.latency.max} ms; ${Math.round(result.requests.average)} req/s\n`);
    assert.equal(result.errors, 0, "no connection errors");
    assert.equal(result.timeouts, 0, "no timeouts");
    assert.equal(acknowledged, RATERS * PAIRS, "every vote was acknowledged");
    assert.equal(stored, acknowledged, "votes acknowledged = votes stored");
    assert.deepEqual(perRater, [], "one vote per rater and pair");
  } finally {
    server.kill("SIGTERM");
  }
});
