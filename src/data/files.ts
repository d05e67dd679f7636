/**
 * Turning a data-set spec (file, directory or glob) into a sorted list of files.
 */
import { readdirSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** True when `s` contains glob characters (*, ?, [). */
export function isGlob(s: string): boolean {
  return /[*?[]/.test(s);
}

/** Converts a single-segment glob (`*`, `?`, `[abc]`) to a RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 1);
      if (end < 0) re += "\\[";
      else {
        re += "[" + glob.slice(i + 1, end).replace(/\\/g, "\\\\") + "]";
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/**
 * Files matching `spec`: a file, a directory (its files ending with one of `exts`, not recursive)
 * or a glob whose wildcards are in the last path segment (e.g. `data/train-*.parquet`).
 * Sorted by name. Throws a clear error when nothing matches.
 */
export function listFiles(spec: string, exts: string[], what: string): string[] {
  let files: string[];
  if (isGlob(spec)) {
    const dir = dirname(spec);
    if (isGlob(dir)) throw new Error(`${spec}: wildcards are only supported in the file name, not in directories`);
    const re = globToRegExp(basename(spec));
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      throw new Error(`${spec}: directory '${dir}' does not exist`);
    }
    files = names.filter((n) => re.test(n)).map((n) => join(dir, n));
  } else {
    let st;
    try {
      st = statSync(spec);
    } catch {
      throw new Error(`${spec}: no such file or directory`);
    }
    if (st.isDirectory()) {
      files = readdirSync(spec)
        .filter((n) => exts.some((e) => n.toLowerCase().endsWith(e)))
        .map((n) => join(spec, n));
    } else files = [spec];
  }
  files.sort();
  if (files.length === 0) throw new Error(`${spec}: no ${what} files found (looked for ${exts.join(", ")})`);
  return files;
}
