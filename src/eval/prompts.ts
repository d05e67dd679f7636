// Evaluation prompt sets: a plain text file (one prompt per line; blank lines and lines starting
// with "#" skipped) or a TSV with a header row naming a "Prompt" column and optionally a
// "Category" column (PartiPrompts' layout: Prompt, Category, Challenge, Note).
import { existsSync, readFileSync } from "node:fs";

export interface EvalPrompt {
  prompt: string;
  category?: string;
}

/** Parses prompt-file text; `where` names the file in errors. */
export function parsePrompts(text: string, where: string): EvalPrompt[] {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  const header = (lines[0] ?? "").split("\t").map((h) => h.trim().toLowerCase());
  const promptCol = header.indexOf("prompt");
  const out: EvalPrompt[] = [];
  if (header.length > 1 && promptCol >= 0) {
    const catCol = header.indexOf("category");
    lines.slice(1).forEach((line, i) => {
      if (line.trim() === "") return;
      const cells = line.split("\t");
      const prompt = (cells[promptCol] ?? "").trim();
      if (prompt === "") throw new Error(`${where}: row ${i + 2} has an empty Prompt cell`);
      const category = catCol >= 0 ? (cells[catCol] ?? "").trim() : "";
      out.push(category === "" ? { prompt } : { prompt, category });
    });
  } else {
    if (lines[0]?.includes("\t")) {
      throw new Error(`${where}: looks like a TSV (tab in the first line) but has no "Prompt" column in its header; add a header row "Prompt<TAB>Category" or use one prompt per line`);
    }
    for (const line of lines) {
      const p = line.trim();
      if (p === "" || p.startsWith("#")) continue;
      out.push({ prompt: p });
    }
  }
  if (out.length === 0) throw new Error(`${where}: no prompts found (one prompt per line, or a TSV with a Prompt column)`);
  return out;
}

/** Reads a prompt file (see parsePrompts). */
export function readPrompts(path: string): EvalPrompt[] {
  if (!existsSync(path)) throw new Error(`prompt file ${path} does not exist`);
  return parsePrompts(readFileSync(path, "utf8"), path);
}

/**
 * At most `limit` prompts. With categories, taken round-robin across categories (in order of first
 * appearance, each category's prompts in file order) so a small budget still covers every
 * category; without, the first `limit`. Deterministic.
 */
export function selectPrompts(prompts: readonly EvalPrompt[], limit: number | undefined): EvalPrompt[] {
  if (limit === undefined || limit >= prompts.length) return [...prompts];
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`prompt limit must be a positive integer, got ${limit}`);
  if (!prompts.some((p) => p.category !== undefined)) return prompts.slice(0, limit);
  const groups = new Map<string, EvalPrompt[]>();
  for (const p of prompts) {
    const k = p.category ?? "";
    const g = groups.get(k) ?? [];
    g.push(p);
    groups.set(k, g);
  }
  const queues = [...groups.values()];
  const out: EvalPrompt[] = [];
  for (let round = 0; out.length < limit; round++) {
    for (const q of queues) {
      const p = q[round];
      if (p !== undefined && out.length < limit) out.push(p);
    }
  }
  return out;
}
