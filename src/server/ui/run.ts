// The run dashboard: live metrics over server-sent events drawn as inline SVG charts, the
// validation grids (browsable by step), checkpoints and the run's config.
export const RUN_BODY = `
<div class="run-head">
  <div>
    <h1>Training run</h1>
    <div class="muted" id="run-dir"></div>
  </div>
  <div class="live"><span class="dot" id="live-dot"></span><span id="live-text">connecting…</span></div>
</div>
<div class="charts" id="charts"></div>
<div class="run-lower">
  <div class="panel grid-view">
    <h2>Validation grid</h2>
    <div class="grid-nav hidden" id="grid-nav">
      <input type="range" id="grid-step" min="0" max="0" value="0" aria-label="validation step">
      <span id="grid-label"></span>
    </div>
    <img id="grid-img" class="hidden" alt="validation grid">
    <p class="muted" id="grid-empty">No validation grid yet (the trainer writes one every validation.every steps).</p>
  </div>
  <div class="run-side">
    <div class="panel">
      <h2>Run</h2>
      <table class="kv" id="run-kv"></table>
    </div>
    <div class="panel" id="events-panel">
      <h2>Events</h2>
      <ul class="events" id="events"><li class="muted">none yet</li></ul>
    </div>
  </div>
</div>
`;

export const RUN_JS = `"use strict";
(function () {
  var d = window.ddpo;
  var $ = function (id) { return document.getElementById(id); };
  var NS = "http://www.w3.org/2000/svg";
  var CHARTS = [
    { key: "loss", title: "loss", ref: Math.LN2, refLabel: "ln 2" },
    { key: "implicitAcc", title: "implicit accuracy", ref: 0.5, refLabel: "chance" },
    { key: "margin", title: "margin (policy − reference)", ref: 0, refLabel: "0" },
    { key: "lr", title: "learning rate" },
    { key: "gradNorm", title: "gradient norm" },
    { key: "policyMse", title: "policy MSE" },
  ];
  var steps = [];
  var events = [];
  var files = { validation: [], checkpoints: [], final: false };
  var lastTime = null;
  var finished = false;
  var connected = false;
  var pending = false;
  var shownGridStep = null;
  var followLatest = true;

  CHARTS.forEach(function (c) {
    var svg = document.createElementNS(NS, "svg");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", c.title);
    c.svg = svg;
    c.last = d.el("span", { class: "last", text: "—" });
    $("charts").appendChild(d.el("div", { class: "panel chart", "data-metric": c.key }, [d.el("h3", null, [d.el("span", { text: c.title }), c.last]), svg]));
  });

  function node(tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function pathOf(pts) {
    var s = "";
    for (var i = 0; i < pts.length; i++) s += (i ? "L" : "M") + pts[i][0].toFixed(1) + " " + pts[i][1].toFixed(1);
    return s;
  }

  function draw(c) {
    var svg = c.svg;
    var W = Math.max(200, svg.clientWidth || 520), H = 190;
    var L = 58, R = 10, T = 10, B = 24;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var xs = [], ys = [];
    steps.forEach(function (r) {
      var v = r[c.key];
      if (typeof v === "number" && isFinite(v)) { xs.push(r.step); ys.push(v); }
    });
    c.last.textContent = ys.length ? d.fmt(ys[ys.length - 1]) : "—";
    if (!ys.length) {
      svg.appendChild(node("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no data yet"));
      return;
    }
    var lo = Math.min.apply(null, ys), hi = Math.max.apply(null, ys);
    if (c.ref !== undefined && c.key !== "lr") { lo = Math.min(lo, c.ref); hi = Math.max(hi, c.ref); }
    if (hi === lo) { var pad0 = Math.abs(hi) * 0.05 || 0.5; lo -= pad0; hi += pad0; }
    var pad = (hi - lo) * 0.06; lo -= pad; hi += pad;
    var x0 = xs[0], x1 = xs[xs.length - 1];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    var sx = function (x) { return L + (W - L - R) * (x - x0) / (x1 - x0); };
    var sy = function (y) { return T + (H - T - B) * (1 - (y - lo) / (hi - lo)); };
    svg.appendChild(node("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    svg.appendChild(node("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    [hi - pad, (hi + lo) / 2, lo + pad].forEach(function (v) {
      svg.appendChild(node("text", { x: L - 6, y: sy(v) + 3, "text-anchor": "end", class: "tick" }, tick(v)));
      svg.appendChild(node("line", { x1: L - 3, y1: sy(v), x2: L, y2: sy(v), class: "axis" }));
    });
    svg.appendChild(node("text", { x: L, y: H - 7, "text-anchor": "start", class: "tick" }, "step " + xs[0]));
    svg.appendChild(node("text", { x: W - R, y: H - 7, "text-anchor": "end", class: "tick" }, "step " + xs[xs.length - 1]));
    if (c.ref !== undefined && c.ref >= lo && c.ref <= hi) {
      svg.appendChild(node("line", { x1: L, y1: sy(c.ref), x2: W - R, y2: sy(c.ref), class: "ref" }));
      svg.appendChild(node("text", { x: W - R - 2, y: sy(c.ref) - 4, "text-anchor": "end", class: "tick" }, c.refLabel));
    }
    // at most ~2 points per pixel column; the smooth line is a centred moving average (no lag)
    var stride = Math.max(1, Math.ceil(ys.length / ((W - L - R) * 2)));
    var k = ys.length > 30 ? Math.max(1, Math.round(ys.length / 30)) : 0;
    var pre = [0];
    for (var j = 0; j < ys.length; j++) pre.push(pre[j] + ys[j]);
    var raw = [], smooth = [];
    for (var i = 0; i < ys.length; i++) {
      if (i % stride === 0 || i === ys.length - 1) {
        var a0 = Math.max(0, i - k), a1 = Math.min(ys.length, i + k + 1);
        raw.push([sx(xs[i]), sy(ys[i])]);
        smooth.push([sx(xs[i]), sy((pre[a1] - pre[a0]) / (a1 - a0))]);
      }
    }
    if (k > 0) svg.appendChild(node("path", { d: pathOf(raw), class: "raw" }));
    svg.appendChild(node("path", { d: pathOf(k > 0 ? smooth : raw), class: "smooth" }));
    if (raw.length === 1) svg.appendChild(node("circle", { cx: raw[0][0], cy: raw[0][1], r: 3, fill: "currentColor", class: "smooth" }));
  }

  function tick(v) {
    var a = Math.abs(v);
    if (a === 0) return "0";
    if (a < 1e-2 || a >= 1e4) return v.toExponential(1);
    return String(Number(v.toPrecision(3)));
  }

  function ago(ms) {
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    return s < 60 ? s + "s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  }

  function renderStatus() {
    var last = steps.length ? steps[steps.length - 1] : null;
    var dot = $("live-dot");
    var fresh = lastTime !== null && Date.now() - lastTime < 120000;
    dot.className = "dot" + (finished ? " done" : connected && fresh ? " on" : "");
    var text = finished ? "finished" : connected ? (fresh ? "live" : "waiting for the trainer") : "reconnecting…";
    if (last) text += " · step " + last.step;
    if (lastTime !== null) text += " · updated " + ago(lastTime);
    $("live-text").textContent = text;
  }

  function renderGrid() {
    var v = files.validation;
    var has = v.length > 0;
    $("grid-empty").classList.toggle("hidden", has);
    $("grid-img").classList.toggle("hidden", !has);
    $("grid-nav").classList.toggle("hidden", v.length < 2);
    if (!has) return;
    var slider = $("grid-step");
    slider.max = String(v.length - 1);
    if (followLatest) slider.value = String(v.length - 1);
    var g = v[Math.min(Number(slider.value), v.length - 1)];
    $("grid-label").textContent = "step " + g.step + " (" + (Number(slider.value) + 1) + " of " + v.length + ")";
    if (shownGridStep !== g.step) {
      shownGridStep = g.step;
      $("grid-img").src = g.url;
      $("grid-img").alt = "validation grid at step " + g.step;
    }
  }

  function renderEvents() {
    var ul = $("events");
    ul.textContent = "";
    if (!events.length) { ul.appendChild(d.el("li", { class: "muted", text: "none yet" })); return; }
    events.slice(-50).reverse().forEach(function (e) {
      var text = e.type === "checkpoint" ? "checkpoint at step " + e.step
        : e.type === "validation" ? "validation grid at step " + e.step
        : e.type === "warning" ? "warning at step " + e.step + ": " + e.message
        : e.type === "done" ? "done at step " + e.step + (e.elapsedSec ? " in " + Math.round(e.elapsedSec) + " s" : "")
        : e.type + " at step " + e.step;
      ul.appendChild(d.el("li", { class: e.type === "warning" ? "down" : "", text: text }));
    });
  }

  function renderKv(info) {
    var t = $("run-kv");
    t.textContent = "";
    var rows = [["folder", info ? info.dir : ""], ["checkpoints", files.checkpoints.length ? files.checkpoints.join(", ") : "none yet"], ["final weights", files.final ? "written" : "not yet"]];
    var cfg = info && info.config;
    if (cfg) ["method", "beta", "finetune", "learningRate", "lrSchedule", "batchSize", "gradientAccumulation", "maxSteps"].forEach(function (k) {
      if (cfg[k] !== undefined && typeof cfg[k] !== "object") rows.push([k, d.fmt(cfg[k])]);
    });
    rows.forEach(function (r) { t.appendChild(d.el("tr", null, [d.el("td", { text: r[0] }), d.el("td", { text: String(r[1]) })])); });
  }

  var info = null;
  function redraw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () {
      pending = false;
      CHARTS.forEach(draw);
      renderStatus();
      renderGrid();
      renderEvents();
      renderKv(info);
    });
  }

  $("grid-step").addEventListener("input", function () {
    followLatest = Number($("grid-step").value) === files.validation.length - 1;
    renderGrid();
  });
  window.addEventListener("resize", redraw);
  setInterval(renderStatus, 5000);

  d.api("GET", "/api/run").then(function (r) {
    info = r;
    files = r.files;
    $("run-dir").textContent = r.dir;
    redraw();
  }).catch(function (e) { d.toast(e.message, true); });

  var es = new EventSource("/api/run/events");
  es.addEventListener("open", function () { connected = true; redraw(); });
  es.addEventListener("error", function () { connected = false; redraw(); });
  es.addEventListener("metrics", function (m) {
    var msg = JSON.parse(m.data);
    if (msg.reset) { steps = []; events = []; finished = false; }
    msg.records.forEach(function (r) {
      if (typeof r.time === "number") lastTime = r.time;
      if (r.type === "step") steps.push(r);
      else events.push(r);
      if (r.type === "done") finished = true;
    });
    document.body.setAttribute("data-steps", String(steps.length));
    redraw();
  });
  es.addEventListener("files", function (m) {
    files = JSON.parse(m.data);
    redraw();
  });
})();
`;
