// The compare page: base | tuned per prompt and seed with reward scores, and the eval report.
export const COMPARE_BODY = `
<div class="run-head">
  <div>
    <h1>Base vs tuned</h1>
    <div class="muted" id="eval-dir"></div>
    <div class="muted small" id="eval-config"></div>
  </div>
  <a class="btn hidden" id="report-link" href="/eval/report" target="_blank" rel="noopener">Open the full report ↗</a>
</div>
<div class="summary" id="summary"></div>
<div class="toolbar">
  <input type="search" id="filter" placeholder="filter prompts">
  <select id="category"><option value="">all categories</option></select>
  <select id="sort">
    <option value="order">in order</option>
    <option value="gain">largest gain first</option>
    <option value="loss">largest loss first</option>
  </select>
  <select id="reward"></select>
  <span class="muted" id="count"></span>
</div>
<div class="panel" id="rows-panel">
  <div class="cmp-row cmp-head"><div>prompt · seed</div><div>base</div><div>tuned</div><div>reward scores</div></div>
  <div id="rows"></div>
</div>
<details class="report hidden" id="report">
  <summary>Evaluation report</summary>
  <iframe id="report-frame" title="evaluation report"></iframe>
</details>
`;

export const COMPARE_JS = `"use strict";
(function () {
  var d = window.ddpo;
  var $ = function (id) { return document.getElementById(id); };
  var data = null;

  function flatten(obj, prefix, out) {
    Object.keys(obj).forEach(function (k) {
      var v = obj[k];
      var key = prefix ? prefix + " · " + k : k;
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
      else if (typeof v === "number" || typeof v === "string" || typeof v === "boolean") out.push([key, v]);
    });
    return out;
  }

  function pct(v) { return typeof v === "number" && isFinite(v) ? (100 * v).toFixed(1) + "%" : "—"; }
  function interval(iv) { return Array.isArray(iv) && iv.length === 2 ? "95% CI " + pct(iv[0]) + " – " + pct(iv[1]) : ""; }

  function card(k, v, sub) {
    return d.el("div", { class: "stat" }, [d.el("div", { class: "k", text: k }), d.el("div", { class: "v", text: v }), sub ? d.el("div", { class: "s", text: sub }) : null]);
  }

  // Known parts of the eval summary get their own cards; anything else is listed flat.
  function renderSummary(sm) {
    var box = $("summary");
    var known = false;
    var wr = sm.winRate;
    if (wr && typeof wr === "object") Object.keys(wr).sort().forEach(function (r) {
      var w = wr[r];
      if (!w || typeof w !== "object" || typeof w.rate !== "number") return;
      known = true;
      var wlt = typeof w.wins === "number" ? w.wins + " W · " + w.losses + " L · " + w.ties + " T" : "";
      box.appendChild(card("tuned win rate · " + r, pct(w.rate), [interval(w.interval), wlt].filter(Boolean).join("  ·  ")));
    });
    var ia = sm.implicitAccuracy;
    if (ia && typeof ia === "object" && typeof ia.accuracy === "number") {
      known = true;
      box.appendChild(card("implicit accuracy", pct(ia.accuracy), [interval(ia.interval), typeof ia.pairs === "number" ? ia.pairs + " pairs" : ""].filter(Boolean).join("  ·  ")));
    }
    var dv = sm.diversity;
    if (dv && typeof dv === "object" && typeof dv.base === "number") {
      known = true;
      box.appendChild(card("diversity base → tuned", d.fmt(dv.base) + " → " + d.fmt(dv.tuned), dv.feature ? "spread across seeds (" + dv.feature + ")" : "spread across seeds"));
    }
    var bon = sm.bestOfN;
    if (bon && typeof bon === "object") Object.keys(bon).sort().forEach(function (r) {
      var b = bon[r];
      if (!b || typeof b !== "object") return;
      known = true;
      box.appendChild(card("best-of-N matching tuned · " + r, b.matchN === null || b.matchN === undefined ? "> max N" : "N = " + b.matchN, "tuned win rate " + pct(b.tunedWinRate)));
    });
    var cfg = sm.config;
    if (cfg && typeof cfg === "object") {
      known = true;
      var bits = [];
      if (cfg.base) bits.push("base " + cfg.base);
      if (cfg.tuned) bits.push("tuned " + cfg.tuned);
      if (cfg.sampler) bits.push(cfg.sampler + (cfg.steps ? " × " + cfg.steps + " steps" : ""));
      if (cfg.guidance !== undefined) bits.push("guidance " + cfg.guidance);
      if (Array.isArray(cfg.seeds)) bits.push(cfg.seeds.length + " seed" + (cfg.seeds.length === 1 ? "" : "s"));
      if (cfg.promptCount !== undefined) bits.push(cfg.promptCount + " prompts");
      $("eval-config").textContent = bits.join(" · ");
    }
    if (!known) flatten(sm, "", []).slice(0, 16).forEach(function (kv) {
      box.appendChild(card(kv[0], d.fmt(kv[1])));
    });
  }

  function delta(s, reward) {
    var sc = s.scores[reward];
    if (!sc || sc.base === null || sc.tuned === null) return null;
    return sc.tuned - sc.base;
  }

  function renderRows() {
    var q = $("filter").value.trim().toLowerCase();
    var cat = $("category").value;
    var sort = $("sort").value;
    var reward = $("reward").value;
    var list = data.samples.filter(function (s) {
      return (!q || s.prompt.toLowerCase().indexOf(q) >= 0) && (!cat || s.category === cat);
    });
    if (sort !== "order" && reward) {
      list = list.slice().sort(function (a, b) {
        var da = delta(a, reward), db = delta(b, reward);
        if (da === null) return 1;
        if (db === null) return -1;
        return sort === "gain" ? db - da : da - db;
      });
    }
    var rows = $("rows");
    rows.textContent = "";
    list.forEach(function (s) {
      var table = d.el("table", { class: "scores" });
      var rewards = Object.keys(s.scores).sort();
      if (rewards.length) {
        table.appendChild(d.el("tr", null, [d.el("th", { text: "" }), d.el("th", { text: "base" }), d.el("th", { text: "tuned" }), d.el("th", { text: "Δ" })]));
      }
      rewards.forEach(function (r) {
        var sc = s.scores[r];
        var dv = delta(s, r);
        table.appendChild(d.el("tr", null, [
          d.el("th", { text: r }),
          d.el("td", { text: d.fmt(sc.base) }),
          d.el("td", { text: d.fmt(sc.tuned) }),
          d.el("td", { class: dv === null ? "" : dv > 0 ? "up" : dv < 0 ? "down" : "", text: dv === null ? "—" : (dv > 0 ? "+" : "") + d.fmt(dv) }),
        ]));
      });
      rows.appendChild(d.el("div", { class: "cmp-row", "data-index": String(s.index) }, [
        d.el("div", null, [
          d.el("div", { class: "p", text: s.prompt }),
          d.el("div", { class: "meta" }, ["seed " + s.seed + " ", s.category ? d.el("span", { class: "chip", text: s.category }) : null]),
        ]),
        d.el("figure", null, [d.el("img", { src: "/api/eval/image/" + s.index + "/base", alt: "base: " + s.prompt, loading: "lazy" })]),
        d.el("figure", null, [d.el("img", { src: "/api/eval/image/" + s.index + "/tuned", alt: "tuned: " + s.prompt, loading: "lazy" })]),
        rewards.length ? table : d.el("span", { class: "muted", text: "no reward scores" }),
      ]));
    });
    $("count").textContent = list.length + " of " + data.samples.length + " samples";
  }

  async function load() {
    try { data = await d.api("GET", "/api/eval"); }
    catch (e) { d.toast(e.message, true); return; }
    $("eval-dir").textContent = data.dir;
    renderSummary(data.summary);
    var cats = {};
    data.samples.forEach(function (s) { if (s.category) cats[s.category] = true; });
    Object.keys(cats).sort().forEach(function (c) { $("category").appendChild(d.el("option", { value: c, text: c })); });
    if (!Object.keys(cats).length) $("category").classList.add("hidden");
    data.rewards.forEach(function (r) { $("reward").appendChild(d.el("option", { value: r, text: "by " + r })); });
    if (!data.rewards.length) { $("reward").classList.add("hidden"); $("sort").classList.add("hidden"); }
    if (data.hasReport) {
      $("report-link").classList.remove("hidden");
      $("report").classList.remove("hidden");
      $("report").addEventListener("toggle", function () {
        if ($("report").open && !$("report-frame").src) $("report-frame").src = "/eval/report";
      });
    }
    renderRows();
  }

  ["filter", "category", "sort", "reward"].forEach(function (id) {
    $(id).addEventListener(id === "filter" ? "input" : "change", renderRows);
  });
  load();
})();
`;
