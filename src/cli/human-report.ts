// `diffusion-dpo eval --report-only`: re-render an eval folder's report.html with the blind A/B
// votes (src/eval/humanReport.ts) and print the human results.
import { UsageError } from "./errors.js";

export async function reportOnly(o: { out: string; human?: string; embedImages: boolean; json: boolean }): Promise<void> {
  const { rerenderReport } = await import("../eval/humanReport.js");
  let r;
  try {
    r = rerenderReport(o.out, { human: o.human, embedImages: o.embedImages });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const h = r.human;
  if (o.json) {
    const questions = h ? Object.fromEntries(Object.entries(h.questions).map(([q, x]) => [q, { votes: x.votes, majority: x.majority, agreement: x.agreement }])) : null;
    const out = { report: r.report, run: r.run, human: h ? { db: h.db, votes: h.votes, raters: h.raters, comparisons: h.comparisons, prompts: h.prompts, stale: h.stale, questions } : null };
    process.stdout.write(`${JSON.stringify(out, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v))}\n`);
    return;
  }
  const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : "—");
  const lines: string[] = [];
  if (!h) lines.push(`no human votes (${o.human ?? `${o.out}/human.sqlite`}); the report has no human section`);
  else {
    lines.push(`human votes          ${h.votes} from ${h.raters.length} raters on ${h.comparisons} comparisons${h.stale ? ` (${h.stale} on other images left out)` : ""}`);
    for (const x of Object.values(h.questions)) {
      const v = x.votes;
      const k = Number.isFinite(x.agreement.kappa) ? x.agreement.kappa.toFixed(3) : "—";
      lines.push(`human ${x.question.padEnd(15)}${pct(v.rate)} [${pct(v.interval[0])}, ${pct(v.interval[1])}]  ${v.wins} tuned / ${v.ties} tie / ${v.losses} base; majority ${pct(x.majority.rate)}; Fleiss κ ${k}`);
    }
  }
  lines.push(`wrote ${r.report}`);
  process.stdout.write(`${lines.join("\n")}\n`);
}
