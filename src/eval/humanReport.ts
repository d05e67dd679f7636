// Human results for report.html: read from the A/B vote store (default <eval folder>/human.sqlite),
// keeping only votes cast on the images the report shows (matched by sha256), and re-rendering an
// existing eval folder's report with them (`diffusion-dpo eval --report-only --out DIR`), without
// sampling anything again.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { EvalJson } from "./evalJson.js";
import { HUMAN_DB_NAME, readHumanResults } from "./human.js";
import type { HumanReportInput } from "./humanSection.js";
import { renderReport } from "./report.js";
import { readRunLog, type RunLog } from "./runLog.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/**
 * The human results for the images `images[i]` (sample i's encoded base and tuned image), or null
 * when `dbPath` does not exist or holds no votes.
 */
export function humanForReport(dbPath: string, images: readonly { base: Uint8Array; tuned: Uint8Array }[], opts: { bootstrap?: number } = {}): HumanReportInput | null {
  const current = new Map(images.map((im, i) => [i, { baseSha256: sha256(im.base), tunedSha256: sha256(im.tuned) }]));
  return readHumanResults(dbPath, { current, bootstrap: opts.bootstrap });
}

export interface RerenderOptions {
  /** The vote store (default <dir>/human.sqlite; a missing default is no human section). */
  human?: string;
  /** Embed images as data URIs (default true), else link them relative to the folder. */
  embedImages?: boolean;
  /** The training run for the curves (default: the eval's config.run when it still exists). */
  run?: RunLog | null;
}

/** Re-renders `<dir>/report.html` from `<dir>/eval.json` and the human votes; returns what it used. */
export function rerenderReport(dir: string, opts: RerenderOptions = {}): { report: string; human: HumanReportInput | null; run: string | null } {
  const file = join(dir, "eval.json");
  if (!existsSync(file)) throw new Error(`${file} does not exist; --report-only needs the --out folder of an earlier \`diffusion-dpo eval\``);
  let data: EvalJson;
  try {
    data = JSON.parse(readFileSync(file, "utf8")) as EvalJson;
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(data.samples) || typeof data.summary?.winRate !== "object" || typeof data.summary?.config !== "object") {
    throw new Error(`${file}: not an eval.json written by \`diffusion-dpo eval\` (needs summary.winRate, summary.config and samples)`);
  }
  const read = (rel: unknown, i: number, which: string): Uint8Array => {
    if (typeof rel !== "string") throw new Error(`${file}: samples[${i}].${which} is not a path`);
    const p = isAbsolute(rel) ? rel : resolve(dir, rel);
    if (!existsSync(p)) throw new Error(`${file}: samples[${i}].${which} = ${rel} does not exist`);
    return readFileSync(p);
  };
  const images = data.samples.map((s, i) => ({ base: read(s.base, i, "base"), tuned: read(s.tuned, i, "tuned") }));
  const dbPath = opts.human ?? join(dir, HUMAN_DB_NAME);
  if (opts.human !== undefined && !existsSync(opts.human)) throw new Error(`--human ${opts.human}: no such file`);
  const human = humanForReport(dbPath, images, { bootstrap: data.summary.config.bootstrap });
  let run = opts.run ?? null;
  const runPath = data.summary.config.run;
  if (opts.run === undefined && typeof runPath === "string" && existsSync(runPath)) run = readRunLog(runPath);
  const embed = opts.embedImages ?? true;
  const html = renderReport(data, {
    run,
    human,
    image: embed
      ? (i, which) => `data:image/png;base64,${Buffer.from(images[i]![which]).toString("base64")}`
      : (i, which) => data.samples[i]![which],
  });
  const report = join(dir, "report.html");
  writeFileSync(report, html);
  return { report, human, run: run ? (run.metricsPath ?? runPath ?? null) : null };
}
