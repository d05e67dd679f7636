// The `--reward` spec grammar (one reward; `eval` takes several, comma-separated):
//
//   spec  := term ( "+" term )*              several terms: a weighted mix, every term weighted
//   term  := [ WEIGHT "*" ] NAME [ "=" PATH ]
//
//   pickscore=/models/PickScore_v1                      PickScore from that folder
//   0.7*pickscore=/models/PickScore_v1+0.3*aesthetic=/models/aesthetic
//                                                       a mix: 0.7·PickScore + 0.3·aesthetic
//   appeal                                              a built-in (no weights needed)
//   /path/to/folder                                     a folder as before (alignment or classifier)
//
// "=" always introduces a path and "*" a weight, so both can be given without ambiguity; a "+"
// splits terms only where a weighted term follows ("+0.3*…"), so a lone path may contain "+". A
// mix is the weighted sum of its terms' raw scores (each in its own units: choose the weights with
// that in mind). Commas separate rewards in `eval --reward`, so paths there cannot hold commas.
import { existsSync } from "node:fs";

export interface RewardTerm {
  /** Lower-case reward name (pickscore, clip, hpsv2, aesthetic, alignment, appeal, category). */
  name: string;
  /** Weights on disk (after "="). */
  path?: string;
  /** Weight in a mix (before "*"). */
  weight?: number;
}

const NAME = /^[a-z][a-z0-9_-]*$/;
const WEIGHT_PREFIX = /^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\*/;

/** Splits a spec into terms (see the file comment); throws a message naming the bad part. */
export function parseRewardSpec(spec: string): RewardTerm[] {
  const text = spec.trim();
  if (text === "") throw new Error("--reward: empty reward spec");
  // split at "+" followed by WEIGHT*
  const pieces: string[] = [];
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "+" && i > start && WEIGHT_PREFIX.test(text.slice(i + 1))) {
      pieces.push(text.slice(start, i));
      start = i + 1;
    }
  }
  pieces.push(text.slice(start));
  const terms = pieces.map((piece) => {
    let rest = piece.trim();
    let weight: number | undefined;
    const w = WEIGHT_PREFIX.exec(rest);
    if (w) {
      weight = Number(w[1]);
      if (!Number.isFinite(weight)) throw new Error(`--reward ${spec}: weight "${w[1]}" is not a number`);
      rest = rest.slice(w[0].length).trim();
    }
    const eq = rest.indexOf("=");
    const name = (eq >= 0 ? rest.slice(0, eq) : rest).trim().toLowerCase();
    const path = eq >= 0 ? rest.slice(eq + 1).trim() : undefined;
    if (!NAME.test(name)) {
      if (eq < 0 && /[/\\.]/.test(rest)) throw new Error(`unknown reward "${rest}": no such file or folder`);
      throw new Error(`--reward ${spec}: "${piece.trim()}" is not [WEIGHT*]NAME[=PATH] (e.g. pickscore=/models/PickScore_v1, 0.7*pickscore=/a+0.3*aesthetic=/b)`);
    }
    if (path !== undefined && path === "") throw new Error(`--reward ${spec}: "${name}=" needs a path after "="`);
    if (path !== undefined && /^[+-]?(\d+(\.\d*)?|\.\d+)(,.*)?$/.test(path) && !existsSync(path)) {
      const w = path.split(",")[0];
      throw new Error(`--reward ${spec}: "=" gives a path, and ${path} is none; a weight goes before the name (${w}*${name}), terms of a mix are joined with "+" (0.7*pickscore=/a+0.3*aesthetic=/b)`);
    }
    const term: RewardTerm = { name };
    if (path !== undefined) term.path = path;
    if (weight !== undefined) term.weight = weight;
    return term;
  });
  if (terms.length > 1 && terms.some((t) => t.weight === undefined)) {
    throw new Error(`--reward ${spec}: in a mix every term needs a weight, e.g. 0.7*pickscore=/a+0.3*aesthetic=/b`);
  }
  return terms;
}

/** The stable name of a term or a mix: weights and names, no paths ("0.7*pickscore+0.3*aesthetic"). */
export function rewardSpecName(terms: readonly RewardTerm[]): string {
  return terms.map((t) => (t.weight !== undefined ? `${t.weight}*${t.name}` : t.name)).join("+");
}
