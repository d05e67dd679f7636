// A preference store read as training data (StoreSource, a PreferenceSource).
import { badRow, checkPairImages } from "./common.js";
import type { Resolution, StoreReader, StoreSourceOptions, StoredImage } from "./store-types.js";
import type { PairUnit, PreferencePair, PreferenceSource, RowResult } from "./types.js";

/**
 * SQLite's own errors ("database disk image is malformed", "file is not a database") name no file:
 * this one names the store and says what to do. Errors that already name the path pass through.
 */
export function damagedStore(path: string, e: unknown): Error {
  const message = e instanceof Error ? e.message : String(e);
  if (message.includes(path)) return e instanceof Error ? e : new Error(message);
  return new Error(
    `${path}: the preference store cannot be read (${message}); it is damaged or not a diffusion-dpo store. ` +
      "Restore it from a copy, or try `sqlite3 FILE .recover` to salvage its rows",
  );
}

/**
 * The store as a `PreferenceSource`: labelled pairs become training pairs with the winner
 * first; ties are dropped (counted) unless `dropTies: false`; unlabelled pairs are counted as
 * filtered. Image bytes are read unit by unit.
 */
export class StoreSource implements PreferenceSource {
  readonly name: string;
  private ids: number[] | null = null;

  constructor(
    readonly store: StoreReader,
    readonly opts: StoreSourceOptions = {},
  ) {
    this.name = store.path;
  }

  resolution(id: number): Resolution {
    return this.store.resolve(id, this.opts);
  }

  async units(): Promise<PairUnit[]> {
    // a snapshot of the pair ids, so the order stays fixed while others keep writing
    try {
      this.ids ??= this.store.pairIds();
    } catch (e) {
      throw damagedStore(this.name, e);
    }
    const size = this.opts.unitSize ?? 256;
    const out: PairUnit[] = [];
    for (let i = 0; i < this.ids.length; i += size) out.push({ key: `${this.name}#${i / size}`, rows: Math.min(size, this.ids.length - i) });
    return out;
  }

  async readUnit(index: number): Promise<RowResult[]> {
    try {
      return await this.#readUnit(index);
    } catch (e) {
      throw damagedStore(this.name, e);
    }
  }

  async #readUnit(index: number): Promise<RowResult[]> {
    const units = await this.units();
    if (index < 0 || index >= units.length) throw new Error(`${this.name}: unit ${index} out of range`);
    const size = this.opts.unitSize ?? 256;
    const ids = this.ids!.slice(index * size, index * size + size);
    const out: RowResult[] = [];
    for (const id of ids) {
      const p = this.store.pair(id);
      if (!p) {
        out.push({ kind: "filtered" }); // deleted since the snapshot
        continue;
      }
      const res = this.resolution(id);
      if (res.winner === null) {
        out.push({ kind: "filtered" });
        continue;
      }
      const tie = res.winner === "tie";
      if (tie && (this.opts.dropTies ?? true)) {
        out.push({ kind: "tie" });
        continue;
      }
      const [c, r] = res.winner === "b" ? [p.imageB, p.imageA] : [p.imageA, p.imageB];
      const ci = this.store.image(c);
      const ri = this.store.image(r);
      const field = (img: StoredImage) => `image ${img.id}`;
      if (ci === null || ri === null) {
        out.push(badRow("missing-file", this.name, id, `image ${ci === null ? c : r}`, "the pair names an image the store does not hold"));
        continue;
      }
      if (ci.data === null && ci.path === null) {
        out.push(badRow("missing-file", this.name, id, field(ci), "image has neither bytes nor a path"));
        continue;
      }
      const pair: PreferencePair = {
        id: String(id),
        prompt: p.prompt,
        chosen: ci.data ?? ci.path!,
        rejected: ri.data ?? ri.path!,
        fields: { chosen: field(ci), rejected: field(ri) },
        tie,
        source: { file: this.name, row: id },
        meta: { labelledBy: res.by, votes: res.votes, imageA: p.imageA, imageB: p.imageB },
      };
      if (this.opts.checkImages) {
        const bad = await checkPairImages(this.name, id, { img: pair.chosen, field: field(ci) }, { img: pair.rejected, field: field(ri) });
        if (bad) {
          out.push(bad);
          continue;
        }
      }
      out.push({ kind: "pair", pair, swapped: res.winner === "b" });
    }
    return out;
  }
}
