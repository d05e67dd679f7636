/**
 * Folder pairs, the layout kohya-style trainers use:
 *
 *   root/w/0001.png  root/l/0001.png      (chosen / rejected; `chosen/` and `rejected/` work too)
 *   root/w/0001.txt                        (caption beside the chosen image, or beside the
 *                                           rejected one, or root/0001.txt)
 *   root/captions.json | captions.jsonl    (or one captions file: {"0001.png": "a cat", ...} or
 *                                           lines {"file": "0001.png", "caption": "a cat"})
 *
 * Files pair up by name (or by stem when the extensions differ). Rows are numbered by the
 * sorted chosen file names; a chosen image without a rejected one (or the reverse) is a
 * missing-file error for that row.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join } from "node:path";
import { badRow, checkPairImages } from "./common.js";
import type { PairUnit, PreferenceSource, ReaderOptions, RowResult } from "./types.js";

export const IMAGE_EXTS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif"];

function isImage(name: string): boolean {
  return IMAGE_EXTS.includes(extname(name).toLowerCase());
}

function stem(name: string): string {
  const e = extname(name);
  return e ? name.slice(0, -e.length) : name;
}

/** The chosen and rejected sub-directory names of `root`, or null when it is not a folder-pair data set. */
export function folderPairDirs(root: string): { chosen: string; rejected: string } | null {
  for (const [c, r] of [["w", "l"], ["chosen", "rejected"]] as const) {
    const cd = join(root, c);
    const rd = join(root, r);
    if (existsSync(cd) && existsSync(rd) && statSync(cd).isDirectory() && statSync(rd).isDirectory()) return { chosen: c, rejected: r };
  }
  return null;
}

export class FolderSource implements PreferenceSource {
  readonly name: string;
  private readonly dirs: { chosen: string; rejected: string };
  private readonly opts: ReaderOptions;
  private names: string[] = [];
  private rejectedByName = new Map<string, string>();
  private rejectedByStem = new Map<string, string>();
  private captions: Map<string, string> | null = null;

  constructor(root: string, opts: ReaderOptions = {}) {
    this.name = root;
    this.opts = opts;
    const dirs = folderPairDirs(root);
    if (!dirs) throw new Error(`${root}: not a folder-pair data set; expected sub-directories w/ and l/ (or chosen/ and rejected/)`);
    this.dirs = dirs;
    this.names = readdirSync(join(root, dirs.chosen)).filter(isImage).sort();
    for (const n of readdirSync(join(root, dirs.rejected)).filter(isImage)) {
      this.rejectedByName.set(n, n);
      this.rejectedByStem.set(stem(n), n);
    }
    this.captions = this.readCaptionsFile();
  }

  private readCaptionsFile(): Map<string, string> | null {
    const json = join(this.name, "captions.json");
    const jsonl = join(this.name, "captions.jsonl");
    const map = new Map<string, string>();
    if (existsSync(json)) {
      let obj: unknown;
      try {
        obj = JSON.parse(readFileSync(json, "utf8"));
      } catch (e) {
        throw new Error(`${json}: invalid JSON (${(e as Error).message}); expected {"<file name>": "<caption>", ...}`);
      }
      if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new Error(`${json}: expected an object {"<file name>": "<caption>", ...}`);
      for (const [k, v] of Object.entries(obj)) if (typeof v === "string") map.set(k, v);
      return map;
    }
    if (existsSync(jsonl)) {
      const lines = readFileSync(jsonl, "utf8").split("\n");
      lines.forEach((line, i) => {
        if (line.trim() === "") return;
        let o: Record<string, unknown>;
        try {
          o = JSON.parse(line) as Record<string, unknown>;
        } catch {
          throw new Error(`${jsonl}: line ${i + 1} is not valid JSON; expected {"file": "<name>", "caption": "<text>"}`);
        }
        const file = o.file ?? o.file_name;
        const cap = o.caption ?? o.text ?? o.prompt;
        if (typeof file === "string" && typeof cap === "string") map.set(file, cap);
      });
      return map;
    }
    return null;
  }

  async units(): Promise<PairUnit[]> {
    return [{ key: this.name, rows: this.names.length }];
  }

  private caption(name: string): string | null {
    if (this.captions) return this.captions.get(name) ?? this.captions.get(stem(name)) ?? null;
    for (const d of [this.dirs.chosen, this.dirs.rejected, "."]) {
      const p = join(this.name, d, `${stem(name)}.txt`);
      if (existsSync(p)) return readFileSync(p, "utf8").trim();
    }
    return null;
  }

  async readUnit(index: number): Promise<RowResult[]> {
    if (index !== 0) throw new Error(`${this.name}: a folder data set has one unit, asked for ${index}`);
    const out: RowResult[] = [];
    const used = new Set<string>();
    for (let row = 0; row < this.names.length; row++) {
      const name = this.names[row]!;
      const rej = this.rejectedByName.get(name) ?? this.rejectedByStem.get(stem(name));
      const chosenField = `${this.dirs.chosen}/${name}`;
      if (!rej) {
        out.push(badRow("missing-file", this.name, row, `${this.dirs.rejected}/${stem(name)}.*`, `no rejected image matches '${chosenField}'`));
        continue;
      }
      used.add(rej);
      const cap = this.caption(name);
      if (cap === null) {
        out.push(badRow("empty-caption", this.name, row, chosenField,
          `no caption for '${name}': add ${this.dirs.chosen}/${stem(name)}.txt or an entry in captions.json`));
        continue;
      }
      if (cap.trim() === "") {
        out.push(badRow("empty-caption", this.name, row, chosenField, `caption for '${name}' is empty`));
        continue;
      }
      const chosen = join(this.name, this.dirs.chosen, name);
      const rejected = join(this.name, this.dirs.rejected, rej);
      if (this.opts.checkImages) {
        const bad = await checkPairImages(this.name, row, { img: chosen, field: chosenField }, { img: rejected, field: `${this.dirs.rejected}/${rej}` });
        if (bad) {
          out.push(bad);
          continue;
        }
      }
      out.push({
        kind: "pair",
        pair: {
          id: stem(name),
          prompt: cap,
          chosen,
          rejected,
          fields: { chosen: chosenField, rejected: `${this.dirs.rejected}/${rej}` },
          tie: false,
          source: { file: this.name, row },
        },
      });
    }
    // rejected images nobody chose: report them too (rows after the chosen ones)
    let row = this.names.length;
    for (const n of [...this.rejectedByName.keys()].sort()) {
      if (used.has(n)) continue;
      out.push(badRow("missing-file", this.name, row++, `${this.dirs.chosen}/${stem(n)}.*`, `no chosen image matches '${this.dirs.rejected}/${n}'`));
    }
    return out;
  }
}
