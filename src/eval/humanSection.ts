// The report's human-evaluation section: per-question win rates of tuned over base from the blind
// A/B votes, the majority over raters, Fleiss' kappa, and the AI rewards beside them (their win
// rate, and how often their verdict matches the human majority). Plain HTML for report.html;
// the page styles come from the report's stylesheet (cards, table.cats).
import type { EvalJson } from "./evalJson.js";
import { HUMAN_QUESTIONS, rewardAgreement, type HumanResults } from "./humanStats.js";

const esc = (s: string): string => s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&#39;" })[c]!);
const isNum = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x);
const pct = (x: unknown): string => (isNum(x) ? `${(100 * x).toFixed(1)}%` : "—");
const iv = (v: unknown): string => (Array.isArray(v) && isNum(v[0]) && isNum(v[1]) ? `[${pct(v[0])}, ${pct(v[1])}]` : "");

export type HumanReportInput = HumanResults & { db: string; stale: number };

export function humanSection(h: HumanReportInput, data: EvalJson): string {
  const cards = HUMAN_QUESTIONS.map((q) => {
    const r = h.questions[q];
    const v = r.votes;
    const m = r.majority;
    const cls = isNum(v.interval[0]) && v.interval[0] > 0.5 ? "good" : isNum(v.interval[1]) && v.interval[1] < 0.5 ? "bad" : "neutral";
    const kappa = isNum(r.agreement.kappa) ? r.agreement.kappa.toFixed(3) : "—";
    return `<div class="card ${cls}">
  <div class="label">human · ${esc(r.text)}</div>
  <div class="big">${pct(v.rate)}</div>
  <div class="ci">${iv(v.interval)} <span class="muted">95% bootstrap over ${v.prompts} prompts, ${v.n} votes</span></div>
  <div class="wtl"><span class="w">${v.wins} tuned</span> · <span class="t">${v.ties} ties</span> · <span class="l">${v.losses} base</span></div>
  <div class="small">decisive: ${pct(v.decisive)} ${iv(v.decisiveInterval)} <span class="muted">Wilson</span></div>
  <div class="small">majority of raters: ${pct(m.rate)} ${iv(m.interval)} <span class="muted">of ${m.n} comparisons (${m.wins}/${m.ties}/${m.losses})</span></div>
  <div class="small muted">Fleiss κ ${kappa} · pairwise agreement ${pct(r.agreement.observed)} on ${r.agreement.subjects} comparisons with ≥ 2 raters</div>
</div>`;
  }).join("\n");
  const tieMargin = isNum(data.summary.config?.tieMargin) ? data.summary.config.tieMargin : 0;
  const rows = Object.values(data.summary.winRate ?? {}).map((w) => {
    const delta = (i: number) => {
      const s = data.samples[i]?.scores?.[w.reward];
      return s && isNum(s.base) && isNum(s.tuned) ? s.tuned - s.base : null;
    };
    const cells = HUMAN_QUESTIONS.map((q) => {
      const a = rewardAgreement(h, q, delta, tieMargin);
      return `<td>${a.decisive ? `${pct(a.rate)} <span class="muted small">of ${a.decisive}</span>` : "—"}</td>`;
    }).join("");
    return `<tr><th>${esc(w.reward)}</th><td><b>${pct(w.rate)}</b> <span class="muted">${iv(w.interval)}</span></td>${cells}</tr>`;
  }).join("\n");
  const head = HUMAN_QUESTIONS.map((q) => `<th>agrees with the human majority · ${esc(q === "general" ? "preference" : q)}</th>`).join("");
  const stale = h.stale > 0 ? ` ${h.stale} vote${h.stale === 1 ? " was" : "s were"} cast on images no longer in this folder and ${h.stale === 1 ? "is" : "are"} left out.` : "";
  return `<section id="human"><h2>Human evaluation (blind A/B)</h2>
<p class="muted small">${h.votes} votes from ${h.raters.length} rater${h.raters.length === 1 ? "" : "s"} on ${h.comparisons} comparisons (${h.prompts} prompts; ${h.ratersPerComparison.min}–${h.ratersPerComparison.max} raters each), from ${esc(h.db)}. Each comparison showed the base and the tuned image of one seed, unlabelled, on sides drawn per comparison and rater. Win rate = (tuned + ½·ties) / votes; the majority per comparison is tuned vs base votes (tie votes abstain).${stale}</p>
<div class="cards">${cards}</div>
${rows ? `<table class="cats" style="margin-top:14px"><thead><tr><th>AI reward</th><th>reward win rate</th>${head}</tr></thead><tbody>${rows}</tbody></table>
<p class="muted small">Agreement: share of comparisons where the reward's verdict (tuned − base beyond the tie margin) matches a decisive human majority.</p>` : ""}
</section>`;
}
