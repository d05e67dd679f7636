// report.html: one self-contained file (inline CSS, inline SVG charts, images as data URIs or
// relative links to images/ beside it; no script, no network) that answers "did alignment make
// the model better, by how much, at what cost": headline numbers with intervals, training curves
// from the run's metrics log, the per-category table, base | tuned samples side by side with
// their scores, and the exact configuration.
import type { EvalJson, WinRateSummary } from "./evalJson.js";
import { humanSection, type HumanReportInput } from "./humanSection.js";
import type { RunLog, StepRecord } from "./runLog.js";
import type { WinRate } from "./stats.js";

export interface ReportOptions {
  /** The training run (curves and config), if known. */
  run: RunLog | null;
  /** The src attribute of sample i's base or tuned image (a data URI or a relative path). */
  image: (index: number, which: "base" | "tuned") => string;
  title?: string;
  /** Blind A/B human-evaluation results to show beside the rewards (src/eval/humanReport.ts). */
  human?: HumanReportInput | null;
}

export function escapeHtml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&#39;" })[c]!);
}

const pct = (x: number | null | undefined, digits = 1): string => (x === null || x === undefined || !Number.isFinite(x) ? "—" : `${(100 * x).toFixed(digits)}%`);
const interval = (iv: [number, number] | null | undefined): string =>
  iv === null || iv === undefined || !Number.isFinite(iv[0]) ? "" : `[${pct(iv[0])}, ${pct(iv[1])}]`;

/** A compact number for axis labels and scores. */
export function fmt(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  const a = Math.abs(x);
  if (a === 0) return "0";
  if (a >= 1e4 || a < 1e-3) return x.toExponential(1).replace("e+", "e");
  if (a >= 100) return x.toFixed(0);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(3);
}

// ---- SVG charts ---------------------------------------------------------------------------------

interface Series {
  xs: number[];
  ys: number[];
  color: string;
  width?: number;
  opacity?: number;
  dash?: string;
}

/** Exponential moving average (TensorBoard-style smoothing, bias-corrected). */
export function ema(ys: number[], alpha: number): number[] {
  const out: number[] = [];
  let m = 0;
  let w = 0;
  for (const y of ys) {
    m = alpha * m + (1 - alpha) * y;
    w = alpha * w + (1 - alpha);
    out.push(m / w);
  }
  return out;
}

/** A tick label: the shortest exact spelling ("0.5", "200", "2e-5"). */
export function tickLabel(x: number): string {
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return x.toExponential().replace(/\.?0+e/, "e").replace("e+", "e");
  return String(Number(x.toPrecision(6)));
}

/** Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 × 10^k, about `count` of them. */
export function niceTicks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= 0.75 * raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  return out;
}

/** A line chart as an inline <svg> (class "curve"), with min/max ticks on both axes. */
export function lineChart(title: string, series: Series[], opts: { yRef?: { y: number; label: string }; xLabel?: string; logX?: boolean } = {}): string {
  const W = 360, H = 210, L = 52, R = 12, T = 26, B = 34;
  const all = series.flatMap((s) => s.xs.map((x, i) => [x, s.ys[i]!] as const)).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const head = `<svg class="curve" viewBox="0 0 ${W} ${H}" role="img" aria-label="${escapeHtml(title)}"><text x="${L}" y="16" class="ct">${escapeHtml(title)}</text>`;
  if (all.length === 0) return `${head}<text x="${W / 2}" y="${H / 2}" text-anchor="middle" class="muted">no data</text></svg>`;
  const tx = (x: number) => (opts.logX ? Math.log2(x) : x);
  let x0 = Math.min(...all.map((p) => tx(p[0]))), x1 = Math.max(...all.map((p) => tx(p[0])));
  let y0 = Math.min(...all.map((p) => p[1])), y1 = Math.max(...all.map((p) => p[1]));
  if (opts.yRef) { y0 = Math.min(y0, opts.yRef.y); y1 = Math.max(y1, opts.yRef.y); }
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
  const pad = (y1 - y0) * 0.06;
  y0 -= pad; y1 += pad;
  const px = (x: number) => L + ((tx(x) - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const parts: string[] = [head];
  // grid and axes at "nice" values (1, 2, 2.5, 5 × 10^k)
  for (const y of niceTicks(y0 + pad, y1 - pad, 4)) {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${py(y).toFixed(1)}" y2="${py(y).toFixed(1)}" class="grid"/>`);
    parts.push(`<text x="${L - 5}" y="${(py(y) + 3.5).toFixed(1)}" text-anchor="end" class="tick">${tickLabel(y)}</text>`);
  }
  const xt = opts.logX ? [...new Set(all.map((p) => p[0]))].sort((a, b) => a - b) : niceTicks(x0, x1, 4);
  for (const x of xt) parts.push(`<text x="${px(x).toFixed(1)}" y="${H - B + 15}" text-anchor="middle" class="tick">${tickLabel(x)}</text>`);
  parts.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" class="axis"/><line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" class="axis"/>`);
  if (opts.xLabel) parts.push(`<text x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle" class="tick">${escapeHtml(opts.xLabel)}</text>`);
  if (opts.yRef) {
    const y = py(opts.yRef.y).toFixed(1);
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" class="ref"/><text x="${W - R - 2}" y="${Number(y) - 4}" text-anchor="end" class="tick">${escapeHtml(opts.yRef.label)}</text>`);
  }
  for (const s of series) {
    const pts = s.xs.map((x, i) => [x, s.ys[i]!] as const).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (pts.length === 0) continue;
    const d = pts.map(([x, y], i) => `${i === 0 ? "M" : "L"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join("");
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1.6}" stroke-opacity="${s.opacity ?? 1}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""}/>`);
    if (pts.length <= 12) for (const [x, y] of pts) parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="2.6" fill="${s.color}"/>`);
  }
  parts.push("</svg>");
  return parts.join("");
}

const CURVES: { key: string; title: string; ref?: { y: number; label: string } }[] = [
  { key: "loss", title: "loss", ref: { y: Math.LN2, label: "ln 2" } },
  { key: "implicitAcc", title: "implicit accuracy", ref: { y: 0.5, label: "½" } },
  { key: "margin", title: "margin (Lw−Ll)−(Rw−Rl)", ref: { y: 0, label: "0" } },
  { key: "lr", title: "learning rate" },
];

/** The four training curves from the metrics log (raw faint, EMA-smoothed solid when long). */
export function trainingCurves(steps: StepRecord[]): string {
  return CURVES.map(({ key, title, ref }) => {
    const rows = steps.filter((s) => typeof s[key] === "number");
    const xs = rows.map((s) => s.step);
    const ys = rows.map((s) => s[key] as number);
    const series: Series[] = rows.length > 20 && key !== "lr"
      ? [{ xs, ys, color: "#2563eb", opacity: 0.25, width: 1 }, { xs, ys: ema(ys, 0.9), color: "#2563eb", width: 2 }]
      : [{ xs, ys, color: "#2563eb", width: 2 }];
    return lineChart(title, series, { yRef: ref, xLabel: "step" });
  }).join("\n");
}

// ---- sections ----------------------------------------------------------------------------------

function winCard(w: WinRateSummary): string {
  const cls = w.interval[0] > 0.5 ? "good" : w.interval[1] < 0.5 ? "bad" : "neutral";
  return `<div class="card ${cls}">
  <div class="label">win rate · ${escapeHtml(w.reward)}</div>
  <div class="big">${pct(w.rate)}</div>
  <div class="ci">${interval(w.interval)} <span class="muted">95% bootstrap over ${w.prompts} prompts</span></div>
  <div class="wtl"><span class="w">${w.wins} wins</span> · <span class="t">${w.ties} ties</span> · <span class="l">${w.losses} losses</span> <span class="muted">of ${w.n}</span></div>
  <div class="small">decisive (ties left out): ${pct(w.decisive)} ${interval(w.decisiveInterval)} <span class="muted">Wilson</span></div>
  <div class="small muted">${escapeHtml(w.description)} · mean Δ ${fmt(w.meanDelta)}</div>
</div>`;
}

function categoryTable(data: EvalJson): string {
  const rewards = Object.values(data.summary.winRate);
  const cats = [...new Set(rewards.flatMap((w) => Object.keys(w.byCategory)))];
  if (cats.length === 0) return "";
  const cell = (w: WinRate | undefined) => (w === undefined ? "<td>—</td>" : `<td><b>${pct(w.rate)}</b> <span class="muted">${interval(w.interval)}</span><br><span class="small">${w.wins}/${w.ties}/${w.losses} · n ${w.n}</span></td>`);
  const rows = cats.map((c) => `<tr><th>${escapeHtml(c)}</th>${rewards.map((w) => cell(w.byCategory[c])).join("")}</tr>`).join("\n");
  return `<section><h2>By category</h2>
<table class="cats"><thead><tr><th>category</th>${rewards.map((w) => `<th>${escapeHtml(w.reward)} <span class="muted small">win rate · W/T/L</span></th>`).join("")}</tr></thead>
<tbody>${rows}</tbody></table></section>`;
}

/** Mean score per reward, base and tuned, with 95% bootstrap intervals over prompts. */
function meanScoreTable(data: EvalJson): string {
  const m = data.summary.meanScores;
  if (!m || Object.keys(m).length === 0) return "";
  const cell = (x: { mean: number; interval: [number, number] }) =>
    `${fmt(x.mean)} <span class="muted small">[${fmt(x.interval[0])}, ${fmt(x.interval[1])}]</span>`;
  const rows = Object.entries(m).map(([name, s]) => {
    const cls = s.delta.interval[0] > 0 ? "w" : s.delta.interval[1] < 0 ? "l" : "t";
    return `<tr><td>${escapeHtml(name)}</td><td>${cell(s.base)}</td><td>${cell(s.tuned)}</td><td class="${cls}">${cell(s.delta)}</td></tr>`;
  }).join("");
  return `<h3 class="small muted">Mean score per reward</h3><table class="cats"><thead><tr><th>reward</th><th>base</th><th>tuned</th><th>tuned − base</th></tr></thead><tbody>${rows}</tbody></table>
<p class="muted small">Means over all samples in each reward's units; 95% percentile bootstrap over prompts (${data.summary.config.bootstrap} replicates, seeds of a prompt resampled together). Δ green: the interval lies above 0.</p>`;
}

function otherCards(data: EvalJson): string {
  const s = data.summary;
  const out: string[] = [];
  const ia = s.implicitAccuracy;
  if (ia !== null) {
    out.push(`<div class="card ${ia.interval[0] > 0.5 ? "good" : "neutral"}"><div class="label">implicit-reward accuracy</div>
<div class="big">${pct(ia.accuracy)}</div><div class="ci">${interval(ia.interval)} <span class="muted">Wilson, ${ia.pairs} held-out pairs</span></div>
<div class="small">K = ${ia.draws} timesteps per pair · mean inside ${fmt(ia.meanInside)} (β ${fmt(ia.beta)}) · ${ia.ties} ties</div>
<div class="small muted">${escapeHtml(ia.source)} · paper: DPO-SDXL 72.0%, DPO-SD1.5 60.8%</div></div>`);
  }
  const d = s.diversity;
  if (d !== null) {
    const ratio = d.tuned / d.base;
    out.push(`<div class="card ${ratio < 0.7 ? "bad" : "neutral"}"><div class="label">diversity across seeds</div>
<div class="big">${fmt(d.tuned)} <span class="vs">vs base ${fmt(d.base)}</span></div>
<div class="ci">tuned / base spread ${Number.isFinite(ratio) ? ratio.toFixed(2) : "—"}${ratio < 0.7 ? " — samples collapse" : ""}</div>
<div class="small">tuned ↔ base (same seed) ${fmt(d.tunedToBase)}</div>
<div class="small muted">mean pairwise RMS distance, ${escapeHtml(d.feature)}</div></div>`);
  }
  return out.join("\n");
}

function bestOfNSection(data: EvalJson): string {
  const b = data.summary.bestOfN;
  if (b === null) return "";
  const charts = Object.entries(b).map(([name, r]) => {
    const chart = lineChart(`best-of-n · ${name}`, [
      { xs: r.points.map((p) => p.n), ys: r.points.map((p) => p.winRate.rate), color: "#7c3aed", width: 2 },
      { xs: r.points.map((p) => p.n), ys: r.points.map((p) => p.winRate.interval[0]), color: "#7c3aed", width: 1, opacity: 0.4, dash: "3 3" },
      { xs: r.points.map((p) => p.n), ys: r.points.map((p) => p.winRate.interval[1]), color: "#7c3aed", width: 1, opacity: 0.4, dash: "3 3" },
    ], { yRef: { y: r.tunedWinRate, label: `tuned ${pct(r.tunedWinRate)}` }, xLabel: "n base samples", logX: true });
    const verdict = r.matchN === null
      ? `Win rate of the best of n base samples against a base sample (dashed: 95% interval). No n up to ${r.points[r.points.length - 1]!.n} reaches the tuned model's ${pct(r.tunedWinRate)}.`
      : `Win rate of the best of n base samples against a base sample (dashed: 95% interval). Best-of-${r.matchN} matches the tuned model's ${pct(r.tunedWinRate)}: about ${r.matchN}× the sampling compute.`;
    return `<figure>${chart}<figcaption>${escapeHtml(verdict)}</figcaption></figure>`;
  });
  return `<section><h2>Best-of-n baseline</h2><p class="muted small">The reward picks the best of n base samples (other seeds); it is judged by the same reward against the base sample the tuned model was compared with. The paper: best-of-n needs ~10× the inference compute to match DPO.</p><div class="charts">${charts.join("")}</div></section>`;
}

function samplesSection(data: EvalJson, image: ReportOptions["image"]): string {
  const rewards = Object.keys(data.summary.winRate);
  const tie = data.summary.config.tieMargin;
  const groups = new Map<string, number[]>();
  data.samples.forEach((s, i) => {
    const key = `${s.category ?? ""}\u0000${s.prompt}`;
    const g = groups.get(key) ?? [];
    g.push(i);
    groups.set(key, g);
  });
  const blocks = [...groups.values()].map((idx) => {
    const first = data.samples[idx[0]!]!;
    const cells = idx.map((i) => {
      const s = data.samples[i]!;
      const rows = rewards.map((r) => {
        const sc = s.scores[r]!;
        const d = sc.tuned - sc.base;
        const cls = d > tie ? "w" : d < -tie ? "l" : "t";
        return `<tr><td class="rn">${escapeHtml(r)}</td><td>${fmt(sc.base)}</td><td class="${cls}">${fmt(sc.tuned)}</td></tr>`;
      }).join("");
      return `<div class="pair"><div class="imgs">
<figure><img src="${escapeHtml(image(i, "base"))}" alt="base, seed ${s.seed}"><figcaption>base</figcaption></figure>
<figure><img src="${escapeHtml(image(i, "tuned"))}" alt="tuned, seed ${s.seed}"><figcaption>tuned</figcaption></figure>
</div><div class="seed">seed ${s.seed}</div><table class="scores"><tr><th></th><th>base</th><th>tuned</th></tr>${rows}</table></div>`;
    }).join("");
    const cat = first.category !== undefined ? `<span class="cat">${escapeHtml(first.category)}</span>` : "";
    return `<div class="prompt-block"><div class="prompt">${cat}${escapeHtml(first.prompt)}</div><div class="grid">${cells}</div></div>`;
  });
  return `<section id="samples"><h2>Samples: base | tuned, same seed</h2>
<p class="muted small">Each pair starts from the same noise (seed) with the same sampler, steps and guidance. Tuned scores in green won, red lost, grey tied (|Δ| ≤ ${fmt(tie)}).</p>
${blocks.join("\n")}</section>`;
}

const CSS = `
:root{--fg:#1f2328;--muted:#6b7280;--line:#e5e7eb;--bg:#fafafa;--good:#15803d;--bad:#b91c1c}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
.sub{color:var(--muted);margin-bottom:18px;word-break:break-all}.muted{color:var(--muted)}.small{font-size:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
.card{background:#fff;border:1px solid var(--line);border-left:4px solid #9ca3af;border-radius:8px;padding:12px 14px}
.card.good{border-left-color:var(--good)}.card.bad{border-left-color:var(--bad)}
.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.card .big{font-size:30px;font-weight:650;margin:2px 0}.card .vs{font-size:14px;font-weight:400;color:var(--muted)}
.card .ci{font-size:13px;margin-bottom:4px}.wtl{font-size:13px;margin-bottom:2px}
.w{color:var(--good)}.l{color:var(--bad)}.t{color:var(--muted)}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
.charts figure{margin:0}.charts figcaption{font-size:12px;color:var(--muted);padding:2px 6px}
svg.curve{width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:8px}
svg .ct{font-size:12.5px;font-weight:600;fill:var(--fg)}svg .tick{font-size:10.5px;fill:var(--muted)}
svg .grid{stroke:#f0f0f0}svg .axis{stroke:#c4c4c4}svg .ref{stroke:#d97706;stroke-dasharray:4 3}
table.cats{border-collapse:collapse;background:#fff;width:100%;border:1px solid var(--line)}
table.cats th,table.cats td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
table.cats thead th{background:#f3f4f6;font-weight:600}
.prompt-block{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 12px;margin-bottom:12px}
.prompt{font-weight:600;margin-bottom:8px}.cat{display:inline-block;font-size:11px;font-weight:500;background:#eef2ff;color:#3730a3;border-radius:10px;padding:1px 8px;margin-right:8px}
.grid{display:flex;flex-wrap:wrap;gap:14px}
.pair{border:1px solid var(--line);border-radius:6px;padding:6px;background:#fcfcfc}
.imgs{display:flex;gap:4px}.imgs figure{margin:0;text-align:center}
.imgs img{width:128px;height:128px;image-rendering:pixelated;display:block;border-radius:3px;background:#eee}
.imgs figcaption{font-size:11px;color:var(--muted)}.seed{font-size:11px;color:var(--muted);text-align:center}
table.scores{font-size:11.5px;border-collapse:collapse;margin:2px auto 0}table.scores td,table.scores th{padding:0 6px;text-align:right}
table.scores th{font-weight:500;color:var(--muted)}table.scores td.rn{text-align:left;color:var(--muted)}
td.w{color:var(--good);font-weight:600}td.l{color:var(--bad);font-weight:600}td.t{color:var(--muted)}
pre{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px;overflow:auto;font-size:12px;max-height:480px}
`;

/** The report as one HTML string. */
export function renderReport(data: EvalJson, opts: ReportOptions): string {
  const s = data.summary;
  const c = s.config;
  const title = opts.title ?? "Diffusion-DPO evaluation";
  const cards = Object.values(s.winRate).map(winCard).join("\n") + otherCards(data);
  const steps = opts.run?.steps ?? [];
  const curves = steps.length > 0
    ? `<section><h2>Training curves</h2><p class="muted small">From ${escapeHtml(opts.run?.metricsPath ?? "")} (${steps.length} logged steps). At initialisation the policy equals the reference, so the loss starts at ln 2 ≈ 0.693 and moves slowly; watch implicit accuracy and the margin.</p><div class="charts">${trainingCurves(steps)}</div></section>`
    : `<section><h2>Training curves</h2><p class="muted">No metrics log given (pass the training run folder with --run).</p></section>`;
  const lora = c.lora ? ` (LoRA rank ${c.lora.rank}, α ${fmt(c.lora.alpha)})` : "";
  const json = (v: unknown) => escapeHtml(JSON.stringify(v, (_k, x: unknown) => (typeof x === "number" && !Number.isFinite(x) ? null : x), 2));
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${CSS}</style></head>
<body><main>
<h1>${escapeHtml(title)}</h1>
<div class="sub">tuned <b>${escapeHtml(c.tuned)}</b>${escapeHtml(lora)} vs base <b>${escapeHtml(c.base)}</b><br>
${c.promptCount} prompts from ${escapeHtml(c.prompts)} × ${c.seeds.length} seed${c.seeds.length === 1 ? "" : "s"} · ${escapeHtml(c.sampler)}, ${c.steps} steps, guidance ${fmt(c.guidance)} · tie margin ${fmt(c.tieMargin)} · ${escapeHtml(c.createdAt)}</div>
<section><h2>Headline</h2><div class="cards">${cards}</div>
<p class="muted small">Win rate = (wins + ½·ties) / n with a 95% percentile bootstrap over prompts (${c.bootstrap} replicates; seeds of a prompt are resampled together). The decisive rate wins / (wins + losses) has a Wilson 95% interval.</p>
${meanScoreTable(data)}</section>
${opts.human ? humanSection(opts.human, data) : ""}
${curves}
${categoryTable(data)}
${bestOfNSection(data)}
${samplesSection(data, opts.image)}
<section><h2>Configuration</h2><h3 class="small muted">evaluation</h3><pre>${json({ ...c, training: undefined })}</pre>
${c.training !== null && c.training !== undefined ? `<h3 class="small muted">training run${opts.run?.configPath ? ` (${escapeHtml(opts.run.configPath)})` : ""}</h3><pre>${json(c.training)}</pre>` : ""}</section>
</main></body></html>
`;
}
