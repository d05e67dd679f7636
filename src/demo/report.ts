// <out>/report.html of a demo run: the evaluation report (src/eval/report.ts, images embedded so
// the file stands alone) with the demo's own section above the headline — the command, how long
// each stage took, the issue's target figures met or missed, and what each stage made (pairs,
// labels, training).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { EvalJson } from "../eval/evalJson.js";
import { escapeHtml, renderReport } from "../eval/report.js";
import type { RunLog } from "../eval/runLog.js";
import type { LabelStageSummary, PairsStageSummary, Target, TrainStageSummary } from "./types.js";
import type { DemoSettings } from "./settings.js";
import { DEMO_STAGES, type DemoStage } from "./stages.js";

export interface DemoReportInput {
  /** The evaluation folder (its images/ are embedded). */
  evalDir: string;
  run: RunLog | null;
  settings: DemoSettings;
  pairs: PairsStageSummary;
  labels: LabelStageSummary;
  train: TrainStageSummary;
  targets: Target[];
  stageSeconds: Record<DemoStage, number>;
  command: string | null;
  /** With --rounds R > 1: the labelling reward's win rate per round. */
  roundWinRates?: { round: number; rate: number; interval: [number, number]; n: number }[];
}

const pct = (x: number | null) => (x === null || !Number.isFinite(x) ? "—" : `${(100 * x).toFixed(1)}%`);
const signedPct = (x: number) => (Math.abs(x) < 5e-4 ? "0.0%" : `${x > 0 ? "+" : "−"}${(100 * Math.abs(x)).toFixed(1)}%`);
const secs = (s: number) => (s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${s.toFixed(1)} s`);

/** On-policy rounds: each round's pairs and its policy's win rate under the labelling reward. */
function roundsParagraph(d: DemoReportInput): string {
  const rounds = d.train.rounds;
  if (rounds === undefined || rounds.length < 2) return "";
  const rate = (r: number) => {
    const w = d.roundWinRates?.find((x) => x.round === r);
    return w === undefined ? "—" : `${pct(w.rate)} [${pct(w.interval[0])}, ${pct(w.interval[1])}]`;
  };
  const rows = rounds.map((r) => `<tr><th>${r.round}</th><td>${r.round === 1 ? "base model" : `round ${r.round - 1}'s policy`}</td><td>${r.pairs.trainPairs}</td>` +
    `<td>${r.labels.meanGap.toPrecision(3)}</td><td>${pct(r.train.finalImplicitAcc)}</td><td>${rate(r.round)}</td><td>${secs(r.seconds)}</td></tr>`).join("");
  return `<p>${rounds.length} on-policy rounds: each round after the first sampled its candidates from the previous round's policy and trained on from its adapters (the reference stays the base model).</p>
<table class="cats"><thead><tr><th>round</th><th>candidates from</th><th>pairs</th><th>mean label gap</th><th>training implicit acc.</th><th>win rate vs base (${escapeHtml(d.labels.reward)})</th><th>time</th></tr></thead><tbody>${rows}</tbody></table>`;
}

/** The demo section (HTML) placed above the evaluation report's headline. */
export function demoSection(d: DemoReportInput): string {
  const s = d.settings;
  const total = DEMO_STAGES.reduce((a, st) => a + d.stageSeconds[st], 0);
  const stageRows = DEMO_STAGES.map((st) => `<tr><th>${st}</th><td>${secs(d.stageSeconds[st])}</td></tr>`).join("");
  const targetRows = d.targets.map((t) => {
    const value = t.what.startsWith("diversity") && t.value !== null ? signedPct(t.value) : pct(t.value);
    return `<tr><th>${escapeHtml(t.what)}</th><td>${escapeHtml(t.target)}</td><td class="${t.met ? "w" : "l"}"><b>${value}</b> ${t.met ? "met" : "missed"}</td></tr>`;
  }).join("");
  const l = d.labels;
  const lr = `lr ${s.lr}`;
  return `<section><h2>The demo run</h2>
<p>${d.pairs.trainPrompts} training captions × K = ${s.k} candidates from the base model (${escapeHtml(s.sampler)}, ${s.sampleSteps} steps, guidance ${s.guidance}) gave
<b>${d.pairs.trainPairs}</b> pairs, labelled by the <b>${escapeHtml(l.reward)}</b> reward (AI feedback): ${l.train.a + l.train.b} decided, ${l.train.ties} ties (skipped), mean score gap ${l.train.meanGap.toPrecision(3)}.
Diffusion-DPO (${s.finetune === "lora" ? `LoRA rank ${s.loraRank}, α ${s.loraAlpha}` : "full fine-tune"}, β ${s.beta}, ${lr}, ${s.steps} steps × ${s.batch} pairs, warmup ${s.warmup})
trained ${d.train.trainableParameters.toLocaleString("en-US")} parameters on ${d.train.usablePairs} usable pairs; the last tenth of its steps averaged loss ${d.train.finalLoss?.toFixed(4) ?? "—"} and implicit accuracy ${pct(d.train.finalImplicitAcc)} on its training batches.
Held out: ${d.pairs.heldoutPairs} pairs over ${d.pairs.heldoutPrompts} ${s.evalCaptions === "dpo-unseen" ? "captions of pretraining emoji that DPO never trains on" : "captions of emoji held out of pretraining"}, labelled the same way, never trained on (implicit accuracy below); the evaluation captions come from the same pool.
Rewards that did not label the pairs: ${s.otherRewards.map(escapeHtml).join(", ") || "none"}.</p>
${roundsParagraph(d)}
<div style="display:grid;grid-template-columns:minmax(0,2fr) minmax(0,1fr);gap:14px;margin-top:12px">
<div><table class="cats"><thead><tr><th>target</th><th>goal</th><th>this run</th></tr></thead><tbody>${targetRows}</tbody></table></div>
<div><table class="cats"><thead><tr><th>stage</th><th>wall time</th></tr></thead><tbody>${stageRows}<tr><th>total</th><td><b>${secs(total)}</b></td></tr></tbody></table></div>
</div>
${d.command ? `<p class="small muted">Command: <code>${escapeHtml(d.command)}</code></p>` : ""}
</section>
`;
}

/** The whole report.html of a demo run. */
export function renderDemoReport(evalJson: EvalJson, d: DemoReportInput): string {
  const cache = new Map<string, string>();
  const dataUri = (rel: string) => {
    let uri = cache.get(rel);
    if (uri === undefined) {
      uri = `data:image/png;base64,${readFileSync(join(d.evalDir, rel)).toString("base64")}`;
      cache.set(rel, uri);
    }
    return uri;
  };
  const html = renderReport(evalJson, {
    run: d.run, title: "Diffusion-DPO demo: the emoji model tuned on AI feedback",
    image: (i, which) => dataUri(evalJson.samples[i]![which]),
  });
  const anchor = "<section><h2>Headline</h2>";
  const at = html.indexOf(anchor);
  const section = demoSection(d);
  return at < 0 ? html.replace("</main>", `${section}</main>`) : `${html.slice(0, at)}${section}${html.slice(at)}`;
}
