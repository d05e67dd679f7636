// An evaluation output folder (written by `diffusion-dpo eval`): eval.json with a summary and one
// sample per (prompt, seed) holding base and tuned image paths and reward scores, and report.html.
// Images are looked up by sample index; a path from a request is never opened.
import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { isAbsolute, join, relative, resolve, sep } from "node:path";
import { z } from "zod";

const ScorePair = z.looseObject({ base: z.number().nullable().optional(), tuned: z.number().nullable().optional() });

const EvalSample = z.looseObject({
  prompt: z.string(),
  seed: z.number().int(),
  category: z.string().nullable().optional(),
  base: z.string().min(1),
  tuned: z.string().min(1),
  scores: z.record(z.string(), ScorePair).optional(),
});

const EvalFile = z.looseObject({
  summary: z.record(z.string(), z.unknown()).optional(),
  samples: z.array(EvalSample),
});

export type EvalSampleT = z.infer<typeof EvalSample>;

export interface EvalView {
  summary: Record<string, unknown>;
  samples: { index: number; prompt: string; seed: number; category: string | null; scores: Record<string, { base: number | null; tuned: number | null }> }[];
  rewards: string[];
  hasReport: boolean;
}

function issueText(e: z.ZodError): string {
  const i = e.issues[0]!;
  return `${i.path.length ? i.path.join(".") : "(top level)"}: ${i.message}`;
}

/** Reads `<dir>/eval.json` (re-read when it changes on disk). */
export class EvalFolder {
  readonly dir: string;
  readonly file: string;
  #cache: { mtimeMs: number; size: number; data: z.infer<typeof EvalFile> } | null = null;

  constructor(dir: string) {
    this.dir = resolve(dir);
    this.file = join(this.dir, "eval.json");
    if (!existsSync(this.file)) throw new Error(`${this.file} does not exist; give --eval the output folder of \`diffusion-dpo eval\``);
    this.load();
  }

  load(): z.infer<typeof EvalFile> {
    const st = statSync(this.file);
    if (this.#cache && this.#cache.mtimeMs === st.mtimeMs && this.#cache.size === st.size) return this.#cache.data;
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(this.file, "utf8"));
    } catch (e) {
      throw new Error(`${this.file}: not valid JSON (${(e as Error).message})`);
    }
    const parsed = EvalFile.safeParse(raw);
    if (!parsed.success) throw new Error(`${this.file}: ${issueText(parsed.error)}`);
    this.#cache = { mtimeMs: st.mtimeMs, size: st.size, data: parsed.data };
    return parsed.data;
  }

  view(): EvalView {
    const data = this.load();
    const rewards = new Set<string>();
    const samples = data.samples.map((s, index) => {
      const scores: Record<string, { base: number | null; tuned: number | null }> = {};
      for (const [k, v] of Object.entries(s.scores ?? {})) {
        rewards.add(k);
        scores[k] = { base: v.base ?? null, tuned: v.tuned ?? null };
      }
      return { index, prompt: s.prompt, seed: s.seed, category: s.category ?? null, scores };
    });
    return { summary: data.summary ?? {}, samples, rewards: [...rewards].sort(), hasReport: existsSync(join(this.dir, "report.html")) };
  }

  /** Absolute path of a sample's image when it lies inside the folder, else null. */
  imagePath(index: number, which: "base" | "tuned"): string | null {
    const s = this.load().samples[index];
    if (!s) return null;
    return this.#inside(s[which]);
  }

  #inside(rel: string): string | null {
    const p = isAbsolute(rel) ? rel : resolve(this.dir, rel);
    if (!existsSync(p)) return null;
    const real = realpathSync(p);
    const root = realpathSync(this.dir);
    const r = relative(root, real);
    if (r === "" || r.startsWith("..") || isAbsolute(r) || r.split(sep).includes("..")) return null;
    return real;
  }

  /**
   * report.html with every src/href that names a sample image rewritten to that sample's image
   * URL (so the report's images load through the index route); null when there is no report.
   */
  report(): string | null {
    const file = join(this.dir, "report.html");
    if (!existsSync(file)) return null;
    const html = readFileSync(file, "utf8");
    const urls = new Map<string, string>();
    const norm = (p: string) => relative(this.dir, resolve(this.dir, p));
    this.load().samples.forEach((s, i) => {
      urls.set(norm(s.base), evalImageUrl(i, "base"));
      urls.set(norm(s.tuned), evalImageUrl(i, "tuned"));
    });
    return html.replace(/\b(src|href)=(["'])([^"']*)\2/gi, (all, attr: string, q: string, value: string) => {
      if (/^(data:|https?:|#|\/)/i.test(value)) return all;
      let decoded = value;
      try {
        decoded = decodeURIComponent(value);
      } catch {
        // keep the raw value
      }
      const url = urls.get(norm(decoded));
      return url ? `${attr}=${q}${url}${q}` : all;
    });
  }
}

export function evalImageUrl(index: number, which: "base" | "tuned"): string {
  return `/api/eval/image/${index}/${which}`;
}
