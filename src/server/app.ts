// The local web app (hono): label pairs into the preference store, compare base and tuned
// samples of an evaluation folder, watch a training run. `createApp` builds the request handler
// (tests call `app.request(...)`); `startServer` in server.ts binds it to an address.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import type { PreferenceStore } from "../data/store.js";
import { EvalFolder } from "./evalFolder.js";
import { HUMAN_DB_NAME } from "../eval/human.js";
import { HumanEvalSession, mountHumanEval } from "./humanEval.js";
import { castVote, imageType, nextFor, undoLast } from "./labelling.js";
import { RunFolder } from "./runFolder.js";
import { parseBody, parseId, Rater } from "./request.js";
import { jsonError, REPORT_CSP, requireJson, requireLocalHostHeader, requireSameOrigin, requireToken, securityHeaders } from "./security.js";
import { COMMON_JS } from "./ui/common.js";
import { COMPARE_BODY, COMPARE_JS } from "./ui/compare.js";
import { HUMAN_BODY, HUMAN_CSS, HUMAN_JS, HUMAN_RESULTS_BODY, HUMAN_RESULTS_JS } from "./ui/human.js";
import { LABEL_BODY, LABEL_JS } from "./ui/label.js";
import { APP_CSS, page, type Features } from "./ui/layout.js";
import { RUN_BODY, RUN_JS } from "./ui/run.js";

export interface AppOptions {
  /** The preference store votes are written to (the caller opens and closes it). */
  store: PreferenceStore;
  /** An evaluation output folder (eval.json, images/, report.html) for the compare page. */
  evalDir?: string;
  /** The human-eval vote store (SQLite) for the A/B page (default `<evalDir>/human.sqlite`). */
  humanDb?: string;
  /** Fixes the left/right coin of a new human-eval store (tests, reproducible studies). */
  humanSeed?: string;
  /** A blind study: the Compare page, its API and the report (which name base and tuned) are off. */
  blind?: boolean;
  /** A training run folder (metrics.jsonl, validation/, checkpoints/) for the run page. */
  runDir?: string;
  /** When set, every request must carry it (header, or the cookie set by `?token=`). */
  token?: string;
  /** The address the server binds; without a token only loopback Host headers (or this) pass. */
  host?: string;
  /** Largest accepted request body in bytes (default 16 KiB). */
  maxBodyBytes?: number;
  /** Where exported JSONL files put the store's image bytes (default `<db>.export-images/` beside the store). */
  exportImagesDir?: string;
  /** How often the run page's event stream looks at the metrics log, ms (default 500). */
  pollMs?: number;
}

export interface App {
  app: Hono;
  /** Ends the open event streams (so a server can close promptly). */
  close(): void;
}

const VoteBody = z.strictObject({
  rater: Rater,
  pairId: z.number().int().positive(),
  choice: z.enum(["a", "b", "tie", "skip"]),
});

const UndoBody = z.strictObject({ rater: Rater });

const ExportBody = z.strictObject({
  labels: z.enum(["human", "ai", "human-then-ai"]).optional(),
  includeTies: z.boolean().optional(),
});

const MAX_BODY = 16 * 1024;

export function createApp(opts: AppOptions): App {
  const store = opts.store;
  const evalFolder = opts.evalDir !== undefined ? new EvalFolder(opts.evalDir) : null;
  const runFolder = opts.runDir !== undefined ? new RunFolder(opts.runDir) : null;
  const human = evalFolder ? new HumanEvalSession(evalFolder, opts.humanDb ?? join(evalFolder.dir, HUMAN_DB_NAME), { seed: opts.humanSeed, blind: opts.blind ?? false }) : null;
  // in a blind study nothing that names base and tuned is served
  const compareFolder = opts.blind ? null : evalFolder;
  const noCompare = opts.blind ? "the Compare page and report are off during a blind study (serve without --blind to compare)" : "no evaluation folder: start serve with --eval DIR";
  const features: Features = { compare: compareFolder !== null, run: runFolder !== null, human: human !== null };
  const maxBody = opts.maxBodyBytes ?? MAX_BODY;
  const pollMs = opts.pollMs ?? 500;
  const streams = new Set<() => void>();
  let closed = false;

  const app = new Hono();
  app.onError((err, c) => jsonError(c, 500, err.message));
  app.notFound((c) => jsonError(c, 404, `no route ${c.req.method} ${new URL(c.req.url).pathname}`));

  app.use("*", securityHeaders());
  if (opts.token !== undefined) app.use("*", requireToken(opts.token));
  else app.use("*", requireLocalHostHeader(opts.host ?? "127.0.0.1"));
  app.use("*", requireSameOrigin());
  app.use("*", async (c, next) => {
    if (c.req.method === "GET" || c.req.method === "HEAD") return next();
    return bodyLimit({ maxSize: maxBody, onError: (c2) => jsonError(c2, 413, `request body over ${maxBody} bytes`) })(c, next);
  });
  app.use("*", requireJson());

  // ---- pages and static files
  const html = (c: Context, body: string) => {
    c.header("Cache-Control", "no-store");
    return c.html(body);
  };
  app.get("/", (c) => c.redirect("/label", 302));
  app.get("/label", (c) => html(c, page({ title: "Label", active: "label", features, body: LABEL_BODY, scripts: ["common.js", "label.js"] })));
  app.get("/compare", (c) => (compareFolder ? html(c, page({ title: "Compare", active: "compare", features, body: COMPARE_BODY, scripts: ["common.js", "compare.js"] })) : jsonError(c, 404, noCompare)));
  app.get("/human", (c) => (human ? html(c, page({ title: "Human eval", active: "human", features, body: HUMAN_BODY, scripts: ["common.js", "human.js"] })) : jsonError(c, 404, "no evaluation folder: start serve with --eval DIR")));
  app.get("/human/results", (c) => (human ? html(c, page({ title: "Human eval results", active: "human", features, body: HUMAN_RESULTS_BODY, scripts: ["common.js", "human-results.js"] })) : jsonError(c, 404, "no evaluation folder: start serve with --eval DIR")));
  app.get("/run", (c) => (runFolder ? html(c, page({ title: "Run", active: "run", features, body: RUN_BODY, scripts: ["common.js", "run.js"] })) : jsonError(c, 404, "no training run: start serve with --run DIR")));
  const STATIC: Record<string, [string, string]> = {
    "app.css": ["text/css; charset=utf-8", APP_CSS + HUMAN_CSS],
    "common.js": ["text/javascript; charset=utf-8", COMMON_JS],
    "label.js": ["text/javascript; charset=utf-8", LABEL_JS],
    "compare.js": ["text/javascript; charset=utf-8", COMPARE_JS],
    "run.js": ["text/javascript; charset=utf-8", RUN_JS],
    "human.js": ["text/javascript; charset=utf-8", HUMAN_JS],
    "human-results.js": ["text/javascript; charset=utf-8", HUMAN_RESULTS_JS],
  };
  app.get("/static/:name", (c) => {
    const f = STATIC[c.req.param("name")];
    if (!f) return jsonError(c, 404, `no static file ${c.req.param("name")}`);
    return c.body(f[1], 200, { "Content-Type": f[0], "Cache-Control": "no-cache" });
  });

  // ---- labelling
  app.get("/api/label/next", (c) => {
    const r = Rater.safeParse(c.req.query("rater") ?? "");
    if (!r.success) return jsonError(c, 400, `rater: ${r.error.issues[0]!.message} (give ?rater=NAME)`);
    return c.json(nextFor(store, r.data));
  });
  app.post("/api/label/vote", async (c) => {
    const b = await parseBody(c, VoteBody);
    if (!b.ok) return b.res;
    const r = castVote(store, b.value.rater, b.value.pairId, b.value.choice);
    if (!r) return jsonError(c, 404, `no pair ${b.value.pairId}`);
    return c.json(r);
  });
  app.post("/api/label/undo", async (c) => {
    const b = await parseBody(c, UndoBody);
    if (!b.ok) return b.res;
    return c.json(undoLast(store, b.value.rater));
  });
  app.get("/api/image/:id", (c) => {
    const id = parseId(c.req.param("id"));
    const img = id === null ? null : store.image(id);
    if (id === null || !img) return jsonError(c, 404, `no image ${c.req.param("id")}`);
    let bytes: Uint8Array;
    try {
      bytes = store.imageBytes(id);
    } catch {
      return jsonError(c, 404, `image ${id}: its file ${img.path ?? ""} cannot be read`);
    }
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, { "Content-Type": imageType(bytes), "Cache-Control": "private, max-age=86400, immutable" });
  });
  app.get("/api/stats", (c) => c.json(store.counts()));

  // ---- exports (POST: they write files; the page turns the answer into a download)
  const exportImagesDir = opts.exportImagesDir ?? (store.path === ":memory:" ? null : join(dirname(resolve(store.path)), `${store.path.replace(/^.*[\\/]/, "")}.export-images`));
  app.post("/api/export/jsonl", async (c) => {
    const b = await parseBody(c, ExportBody);
    if (!b.ok) return b.res;
    if (exportImagesDir === null) return jsonError(c, 400, "this store lives in memory, so exported image paths would not last; serve a --db file");
    const tmp = mkdtempSync(join(tmpdir(), "ddpo-export-"));
    try {
      const file = join(tmp, "preferences.jsonl");
      const { pairs } = await store.exportJsonl(file, { labels: b.value.labels, imagesDir: exportImagesDir });
      return c.body(new Uint8Array(readFileSync(file)), 200, {
        "Content-Type": "application/x-ndjson; charset=utf-8",
        "Content-Disposition": 'attachment; filename="preferences.jsonl"',
        "X-Pairs": String(pairs),
        "Cache-Control": "no-store",
      });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
  app.post("/api/export/parquet", async (c) => {
    const b = await parseBody(c, ExportBody);
    if (!b.ok) return b.res;
    const tmp = mkdtempSync(join(tmpdir(), "ddpo-export-"));
    try {
      const file = join(tmp, "preferences.parquet");
      const { rows } = await store.exportParquet(file, { labels: b.value.labels, includeTies: b.value.includeTies });
      return c.body(new Uint8Array(readFileSync(file)), 200, {
        "Content-Type": "application/vnd.apache.parquet",
        "Content-Disposition": 'attachment; filename="preferences.parquet"',
        "X-Pairs": String(rows),
        "Cache-Control": "no-store",
      });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  // ---- compare
  app.get("/api/eval", (c) => {
    const evalFolder = compareFolder;
    if (!evalFolder) return jsonError(c, 404, noCompare);
    return c.json({ dir: evalFolder.dir, ...evalFolder.view() });
  });
  app.get("/api/eval/image/:index/:which", (c) => {
    const evalFolder = compareFolder;
    if (!evalFolder) return jsonError(c, 404, noCompare);
    const index = parseId(c.req.param("index"));
    const which = c.req.param("which");
    if (index === null || (which !== "base" && which !== "tuned")) return jsonError(c, 404, "eval images are addressed as /api/eval/image/<sample index>/<base|tuned>");
    const p = evalFolder.imagePath(index, which);
    if (!p) return jsonError(c, 404, `sample ${index} has no readable ${which} image inside ${evalFolder.dir}`);
    const bytes = new Uint8Array(readFileSync(p));
    return c.body(bytes, 200, { "Content-Type": imageType(bytes), "Cache-Control": "no-cache" });
  });
  app.get("/eval/report", (c) => {
    const evalFolder = compareFolder;
    if (!evalFolder) return jsonError(c, 404, noCompare);
    const report = evalFolder.report();
    if (report === null) return jsonError(c, 404, `${evalFolder.dir} has no report.html`);
    return c.body(report, 200, { "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": REPORT_CSP, "Cache-Control": "no-cache" });
  });

  // ---- blind A/B human evaluation (src/server/humanEval.ts)
  mountHumanEval(app, human);

  // ---- run
  app.get("/api/run", (c) => {
    if (!runFolder) return jsonError(c, 404, "no training run: start serve with --run DIR");
    return c.json({ dir: runFolder.dir, files: runFolder.files(), config: runFolder.config() });
  });
  app.get("/api/run/validation/:step", (c) => {
    if (!runFolder) return jsonError(c, 404, "no training run: start serve with --run DIR");
    const step = parseId(c.req.param("step"));
    const p = step === null ? null : runFolder.validationPath(step);
    if (!p) return jsonError(c, 404, `no validation grid for step ${c.req.param("step")}`);
    return c.body(new Uint8Array(readFileSync(p)), 200, { "Content-Type": "image/png", "Cache-Control": "private, max-age=3600" });
  });
  app.get("/api/run/events", (c) => {
    if (!runFolder) return jsonError(c, 404, "no training run: start serve with --run DIR");
    c.header("Cache-Control", "no-store");
    return streamSSE(c, async (stream) => {
      let open = !closed;
      const stop = () => {
        open = false;
      };
      streams.add(stop);
      stream.onAbort(stop);
      const tail = runFolder.tail();
      let lastFiles = "";
      let lastBeat = Date.now();
      try {
        while (open) {
          const { reset, records } = tail.poll();
          if (reset || records.length > 0) {
            // batches keep the first load of a long log to a few messages
            for (let i = 0; i < Math.max(1, records.length); i += 2000) {
              await stream.writeSSE({ event: "metrics", data: JSON.stringify({ reset: reset && i === 0, records: records.slice(i, i + 2000) }) });
            }
            lastBeat = Date.now();
          }
          const files = JSON.stringify(runFolder.files());
          if (files !== lastFiles) {
            lastFiles = files;
            await stream.writeSSE({ event: "files", data: files });
            lastBeat = Date.now();
          }
          if (Date.now() - lastBeat > 15000) {
            await stream.write(": keep-alive\n\n");
            lastBeat = Date.now();
          }
          await stream.sleep(pollMs);
        }
      } finally {
        streams.delete(stop);
      }
    }, async () => {
      // the page went away mid-write; nothing to clean up
    });
  });

  return {
    app,
    close() {
      closed = true;
      human?.close();
      for (const stop of streams) stop();
      streams.clear();
    },
  };
}
