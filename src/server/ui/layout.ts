// The page shell and the stylesheet. Pages carry no data: each page's script fetches it from the
// JSON API and writes it with textContent, so nothing a user typed is ever parsed as HTML.

export type PageName = "label" | "compare" | "run" | "human";

export interface Features {
  compare: boolean;
  run: boolean;
  /** The blind A/B human evaluation (an eval folder is served). */
  human: boolean;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]!);
}

export function page(opts: { title: string; active: PageName; features: Features; body: string; scripts: string[] }): string {
  const link = (name: PageName, label: string, on: boolean) =>
    on ? `<a href="/${name}"${opts.active === name ? ' class="active" aria-current="page"' : ""}>${label}</a>` : `<span class="off" title="${name === "compare" && opts.features.human ? "off during a blind study (--blind)" : `start serve with --${name === "run" ? "run" : "eval"} DIR`}">${label}</span>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(opts.title)} · diffusion-dpo</title>
<link rel="stylesheet" href="/static/app.css">
<link rel="icon" href="data:,">
</head>
<body data-page="${opts.active}">
<header class="top">
  <div class="brand">diffusion<span>-dpo</span></div>
  <nav>${link("label", "Label", true)}${link("compare", "Compare", opts.features.compare)}${link("run", "Run", opts.features.run)}${link("human", "Human eval", opts.features.human)}</nav>
  <div class="top-right" id="top-right"></div>
</header>
<main>
${opts.body}
</main>
${opts.scripts.map((s) => `<script src="/static/${s}" defer></script>`).join("\n")}
</body>
</html>
`;
}

export const APP_CSS = `
:root {
  --bg: #f5f6f8; --panel: #fff; --ink: #1d2330; --muted: #667085; --line: #e3e6eb;
  --accent: #3358d4; --accent-soft: #e8eefc; --good: #1a7f4b; --bad: #b42318; --warn: #b54708;
  --radius: 10px; --shadow: 0 1px 2px rgba(16,24,40,.06), 0 1px 3px rgba(16,24,40,.08);
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; }
header.top { display: flex; align-items: center; gap: 28px; padding: 0 24px; height: 56px; background: var(--panel); border-bottom: 1px solid var(--line); }
.brand { font-weight: 700; font-size: 17px; letter-spacing: -.2px; }
.brand span { color: var(--accent); }
nav { display: flex; gap: 4px; }
nav a, nav .off { padding: 7px 12px; border-radius: 8px; text-decoration: none; color: var(--muted); font-weight: 500; font-size: 14px; }
nav a:hover { background: var(--bg); color: var(--ink); }
nav a.active { background: var(--accent-soft); color: var(--accent); }
nav .off { opacity: .45; cursor: not-allowed; }
.top-right { margin-left: auto; display: flex; align-items: center; gap: 10px; font-size: 14px; color: var(--muted); }
main { max-width: 1180px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; letter-spacing: -.3px; }
h2 { font-size: 16px; margin: 0 0 12px; }
.muted { color: var(--muted); }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); box-shadow: var(--shadow); padding: 18px 20px; }
button, .btn { font: inherit; font-size: 14px; font-weight: 500; border: 1px solid var(--line); background: var(--panel); color: var(--ink); padding: 8px 14px; border-radius: 8px; cursor: pointer; display: inline-flex; align-items: center; gap: 8px; text-decoration: none; }
button:hover, .btn:hover { border-color: #c5cad3; background: #fafbfc; }
button:disabled { opacity: .5; cursor: default; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.primary:hover { background: #2a4bbb; }
button.linkish { border: none; background: none; color: var(--accent); padding: 2px 4px; }
kbd { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; background: var(--bg); border: 1px solid var(--line); border-bottom-width: 2px; border-radius: 5px; padding: 1px 6px; color: var(--ink); }
input[type=text] { font: inherit; font-size: 15px; padding: 9px 12px; border: 1px solid var(--line); border-radius: 8px; min-width: 240px; }
input[type=text]:focus { outline: 2px solid var(--accent-soft); border-color: var(--accent); }
.toast { position: fixed; bottom: 20px; left: 50%; transform: translateX(-50%); background: var(--ink); color: #fff; padding: 10px 16px; border-radius: 8px; font-size: 14px; opacity: 0; transition: opacity .2s; pointer-events: none; }
.toast.show { opacity: .94; }
.toast.error { background: var(--bad); }
.hidden { display: none !important; }

/* label */
.rater-gate { max-width: 460px; margin: 60px auto; text-align: center; }
.rater-gate form { display: flex; gap: 8px; justify-content: center; margin-top: 16px; }
.label-head { max-width: 1000px; margin: 0 auto 14px; display: flex; align-items: flex-end; justify-content: space-between; gap: 24px; }
.prompt-label { font-size: 12px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted); font-weight: 600; }
.prompt { font-size: 24px; font-weight: 600; margin-top: 4px; line-height: 1.3; overflow-wrap: anywhere; }
.progress { min-width: 220px; text-align: right; font-size: 14px; color: var(--muted); }
.bar { height: 6px; background: var(--line); border-radius: 3px; margin-top: 6px; overflow: hidden; }
.bar > div { height: 100%; background: var(--accent); width: 0; transition: width .25s; }
.duel { display: grid; grid-template-columns: 1fr 1fr; gap: 20px; max-width: 1000px; margin: 0 auto; }
.choice { position: relative; background: var(--panel); border: 2px solid var(--line); border-radius: 14px; padding: 14px; cursor: pointer; transition: border-color .12s, transform .12s; box-shadow: var(--shadow); }
.choice:hover { border-color: var(--accent); }
.choice.picked { border-color: var(--good); transform: scale(.99); }
.choice img { display: block; width: 100%; aspect-ratio: 1; object-fit: contain; max-height: max(260px, calc(100vh - 330px)); image-rendering: pixelated; background: repeating-conic-gradient(#f0f1f4 0 25%, #fff 0 50%) 0 0 / 24px 24px; border-radius: 8px; }
.choice .tag { position: absolute; top: 22px; left: 22px; background: rgba(255,255,255,.92); border: 1px solid var(--line); border-radius: 7px; padding: 3px 9px; font-size: 13px; font-weight: 600; }
.actions { display: flex; justify-content: center; gap: 10px; margin: 18px 0 8px; flex-wrap: wrap; }
.actions button { min-width: 120px; justify-content: center; }
.done-box { text-align: center; padding: 60px 20px; max-width: 1000px; margin: 0 auto; }
.done-box .big { font-size: 40px; }
.exports { display: flex; gap: 8px; align-items: center; justify-content: center; margin-top: 22px; font-size: 14px; color: var(--muted); }

/* compare */
.summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 12px; margin: 16px 0 20px; }
.stat { background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); padding: 12px 14px; }
.stat .k { font-size: 12px; color: var(--muted); overflow-wrap: anywhere; }
.stat .s { font-size: 12px; color: var(--muted); margin-top: 4px; font-variant-numeric: tabular-nums; }
.small { font-size: 13px; margin-top: 2px; }
.stat .v { font-size: 20px; font-weight: 650; margin-top: 4px; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.toolbar { display: flex; gap: 10px; align-items: center; margin-bottom: 14px; flex-wrap: wrap; }
.toolbar select, .toolbar input { font: inherit; font-size: 14px; padding: 7px 10px; border: 1px solid var(--line); border-radius: 8px; background: var(--panel); }
.cmp-row { display: grid; grid-template-columns: minmax(200px, 1.1fr) 160px 160px minmax(220px, 1.3fr); gap: 16px; align-items: center; padding: 14px 16px; border-bottom: 1px solid var(--line); }
.cmp-row:last-child { border-bottom: none; }
.cmp-head { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); font-weight: 600; padding-top: 10px; padding-bottom: 10px; }
.cmp-row .p { font-weight: 600; overflow-wrap: anywhere; }
.cmp-row .meta { font-size: 13px; color: var(--muted); margin-top: 3px; }
.cmp-row figure { margin: 0; }
.cmp-row img { width: 160px; height: 160px; object-fit: contain; image-rendering: pixelated; border-radius: 8px; border: 1px solid var(--line); background: #fff; display: block; }
.scores { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
.scores th { text-align: left; font-weight: 500; color: var(--muted); padding: 3px 6px 3px 0; }
.scores td { text-align: right; padding: 3px 0 3px 14px; min-width: 52px; }
.scores tr:first-child th { font-size: 11px; text-transform: uppercase; letter-spacing: .05em; text-align: right; padding-left: 14px; }
.scores tr:first-child th:first-child { padding-left: 0; }
.up { color: var(--good); font-weight: 600; }
.down { color: var(--bad); font-weight: 600; }
.chip { display: inline-block; font-size: 12px; background: var(--accent-soft); color: var(--accent); padding: 1px 8px; border-radius: 10px; }
details.report { margin-top: 22px; }
details.report summary { cursor: pointer; font-weight: 600; padding: 8px 0; }
details.report iframe { width: 100%; height: 480px; border: 1px solid var(--line); border-radius: var(--radius); background: #fff; }

/* run */
.run-head { display: flex; justify-content: space-between; align-items: flex-end; gap: 16px; margin-bottom: 16px; }
.live { display: inline-flex; align-items: center; gap: 8px; font-size: 14px; color: var(--muted); }
.dot { width: 9px; height: 9px; border-radius: 50%; background: #c5cad3; }
.dot.on { background: var(--good); box-shadow: 0 0 0 4px #dff3e8; }
.dot.done { background: var(--accent); }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.chart h3 { margin: 0; font-size: 14px; font-weight: 600; display: flex; justify-content: space-between; }
.chart h3 .last { font-variant-numeric: tabular-nums; color: var(--accent); }
.chart svg { width: 100%; height: 190px; display: block; margin-top: 8px; }
.chart .axis { stroke: var(--line); stroke-width: 1; }
.chart .tick { fill: var(--muted); font-size: 10px; font-family: inherit; }
.chart .raw { fill: none; stroke: #b8c4ee; stroke-width: 1.2; }
.chart .smooth { fill: none; stroke: var(--accent); stroke-width: 2; }
.chart .ref { stroke: var(--warn); stroke-dasharray: 4 4; stroke-width: 1; }
.chart .empty { fill: var(--muted); font-size: 13px; }
.run-lower { display: grid; grid-template-columns: 2fr 1fr; gap: 16px; margin-top: 16px; align-items: start; }
.run-side { display: flex; flex-direction: column; gap: 16px; }
.grid-view img { width: 100%; image-rendering: pixelated; border-radius: 8px; border: 1px solid var(--line); background: #fff; }
.grid-nav { display: flex; align-items: center; gap: 10px; margin-bottom: 10px; font-size: 14px; }
.grid-nav input[type=range] { flex: 1; }
.kv { width: 100%; border-collapse: collapse; font-size: 13px; }
.kv td { padding: 4px 0; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
.kv td:first-child { color: var(--muted); padding-right: 10px; white-space: nowrap; }
.events { max-height: 220px; overflow: auto; font-size: 13px; margin: 0; padding-left: 18px; }
@media (max-width: 820px) {
  .charts, .run-lower, .duel { grid-template-columns: 1fr; }
  .cmp-row { grid-template-columns: 1fr 1fr; }
}
`;
