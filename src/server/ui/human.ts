// The blind A/B page (two unlabelled images, three questions, left / right / tie) and the
// human-evaluation results page. Keys on the A/B page: 1 left, 2 right, 3 tie answer the
// highlighted question and move to the next; ↑ / ↓ change question; Enter submits.
export const HUMAN_BODY = `
<section id="gate" class="rater-gate panel hidden">
  <h1>Who is rating?</h1>
  <p class="muted">Your answers are stored under this name; you will see each comparison once.</p>
  <form id="gate-form">
    <input type="text" id="rater-input" name="rater" maxlength="64" placeholder="your name or initials" autocomplete="off" required>
    <button class="primary" type="submit">Start</button>
  </form>
</section>

<section id="ab" class="hidden">
  <div class="warn hidden" id="blind-warn">The Compare page is on, so a rater can look up which image is which. For a blind study start the server with <kbd>--blind</kbd>.</div>
  <div class="label-head">
    <div>
      <div class="prompt-label">Prompt</div>
      <div class="prompt" id="prompt"></div>
    </div>
    <div class="progress">
      <span id="progress-text">0 of 0</span> answered
      <div class="bar"><div id="progress-bar"></div></div>
    </div>
  </div>
  <div id="comparison" class="duel ab-duel">
    <figure class="side"><span class="tag">Left</span><img id="left-img" alt="left image"></figure>
    <figure class="side"><span class="tag">Right</span><img id="right-img" alt="right image"></figure>
  </div>
  <div class="questions panel" id="questions"></div>
  <div class="actions">
    <button id="submit" class="primary" type="button" disabled><kbd>Enter</kbd> Submit and next</button>
  </div>
  <p class="keys muted">Keys: <kbd>1</kbd> left · <kbd>2</kbd> right · <kbd>3</kbd> tie answer the highlighted question and move on; <kbd>↑</kbd> <kbd>↓</kbd> change question; <kbd>Enter</kbd> submits once all three are answered. Which image is which model is hidden, and the sides are shuffled.</p>
</section>

<section id="done" class="done-box panel hidden">
  <div class="big">✓</div>
  <h1>All comparisons answered</h1>
  <p class="muted" id="done-text"></p>
  <a class="btn" href="/human/results">See the results</a>
</section>
`;

export const HUMAN_JS = `"use strict";
(function () {
  var d = window.ddpo;
  var KEY = "ddpo.rater";
  var rater = null;
  var current = null;
  var questions = [];
  var answers = {};
  var active = 0;
  var busy = false;
  var $ = function (id) { return document.getElementById(id); };
  var LABEL = { left: "Left", right: "Right", tie: "Tie" };
  var KEYOF = { left: "1", right: "2", tie: "3" };

  function show(id) {
    ["gate", "ab", "done"].forEach(function (s) { $(s).classList.toggle("hidden", s !== id); });
  }

  function renderRater() {
    var box = $("top-right");
    box.textContent = "";
    if (!rater) return;
    box.appendChild(d.el("span", { text: "Rater" }));
    box.appendChild(d.el("strong", { id: "rater-name", text: rater }));
    box.appendChild(d.el("button", { class: "linkish", type: "button", text: "change", onclick: function () {
      localStorage.removeItem(KEY);
      rater = null;
      renderRater();
      show("gate");
      $("rater-input").focus();
    } }));
  }

  function buildQuestions() {
    var box = $("questions");
    box.textContent = "";
    questions.forEach(function (q, i) {
      var row = d.el("div", { class: "q", id: "q-" + q.key, "data-q": q.key }, [
        d.el("div", { class: "q-text" }, [d.el("span", { class: "q-num", text: String(i + 1) }), q.text]),
      ]);
      var btns = d.el("div", { class: "q-answers", role: "group", "aria-label": q.text });
      ["left", "right", "tie"].forEach(function (a) {
        btns.appendChild(d.el("button", { type: "button", class: "ans", "data-q": q.key, "data-a": a, "aria-pressed": "false", onclick: function () { answer(i, a); } }, [
          d.el("kbd", { text: KEYOF[a] }), " " + LABEL[a],
        ]));
      });
      row.appendChild(btns);
      row.addEventListener("click", function (e) { if (e.target === row || e.target.className === "q-text") setActive(i); });
      box.appendChild(row);
    });
  }

  function renderAnswers() {
    questions.forEach(function (q, i) {
      var row = $("q-" + q.key);
      row.classList.toggle("active", i === active);
      row.classList.toggle("answered", answers[q.key] !== undefined);
      Array.prototype.forEach.call(row.querySelectorAll("button.ans"), function (b) {
        b.setAttribute("aria-pressed", b.getAttribute("data-a") === answers[q.key] ? "true" : "false");
      });
    });
    $("submit").disabled = !complete();
  }

  function complete() {
    return questions.length > 0 && questions.every(function (q) { return answers[q.key] !== undefined; });
  }

  function setActive(i) {
    active = Math.max(0, Math.min(questions.length - 1, i));
    renderAnswers();
  }

  function answer(i, a) {
    if (!current) return;
    answers[questions[i].key] = a;
    active = i;
    // move to the first unanswered question after this one (or stay on the last)
    for (var j = 1; j <= questions.length; j++) {
      var k = (i + j) % questions.length;
      if (answers[questions[k].key] === undefined) { active = k; break; }
    }
    renderAnswers();
  }

  function render(data) {
    if (data.questions && !questions.length) { questions = data.questions; buildQuestions(); }
    if (data.blind === false) $("blind-warn").classList.remove("hidden");
    var p = data.progress;
    $("progress-text").textContent = p.done + " of " + p.total;
    $("progress-bar").style.width = (p.total ? (100 * p.done / p.total) : 0) + "%";
    current = data.comparison;
    answers = {};
    active = 0;
    if (!current) {
      $("done-text").textContent = p.total === 0
        ? "The evaluation folder has no samples."
        : "You answered all " + p.total + " comparisons. Thank you!";
      show("done");
      return;
    }
    $("comparison").setAttribute("data-comparison-id", String(current.id));
    $("prompt").textContent = current.prompt;
    $("left-img").src = current.left.url;
    $("right-img").src = current.right.url;
    renderAnswers();
    show("ab");
  }

  async function request(method, url, body) {
    busy = true;
    try { return await d.api(method, url, body); }
    catch (e) { d.toast(e.message, true); return null; }
    finally { busy = false; }
  }

  async function load() {
    var data = await request("GET", "/api/human/next?rater=" + encodeURIComponent(rater));
    if (data) render(data);
  }

  async function submit() {
    if (busy || !current || !complete()) return;
    var body = { rater: rater, comparison: current.id };
    questions.forEach(function (q) { body[q.key] = answers[q.key]; });
    var data = await request("POST", "/api/human/vote", body);
    if (data) render(data);
    else load();
  }

  function start(name) {
    rater = name;
    localStorage.setItem(KEY, name);
    renderRater();
    load();
  }

  $("gate-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var v = $("rater-input").value.trim();
    if (v) start(v);
  });
  $("submit").addEventListener("click", submit);

  document.addEventListener("keydown", function (e) {
    if (!rater || !current || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    var k = e.key;
    var a = k === "1" ? "left" : k === "2" ? "right" : k === "3" ? "tie" : null;
    if (a) { e.preventDefault(); if (!e.repeat) answer(active, a); return; }
    if (k === "ArrowDown") { e.preventDefault(); setActive(active + 1); return; }
    if (k === "ArrowUp") { e.preventDefault(); setActive(active - 1); return; }
    if (k === "Enter") { e.preventDefault(); if (!e.repeat) submit(); }
  });

  var saved = localStorage.getItem(KEY);
  if (saved) start(saved);
  else { show("gate"); $("rater-input").focus(); }
})();
`;

export const HUMAN_RESULTS_BODY = `
<div class="run-head">
  <div>
    <h1>Human evaluation: tuned vs base</h1>
    <div class="muted" id="hr-meta"></div>
  </div>
  <a class="btn" href="/human">Rate comparisons</a>
</div>
<div class="summary hr-cards" id="hr-cards"></div>
<p class="muted small" id="hr-notes"></p>
<div class="panel hr-panel">
  <h2>AI rewards beside the raters</h2>
  <table class="hr-table" id="hr-rewards"></table>
</div>
<div class="panel hr-panel">
  <h2>Raters</h2>
  <table class="hr-table" id="hr-raters"></table>
</div>
<div class="panel hr-panel">
  <h2>Per comparison <span class="muted small">votes tuned / base / tie and the majority</span></h2>
  <table class="hr-table" id="hr-rows"></table>
</div>
`;

export const HUMAN_RESULTS_JS = `"use strict";
(function () {
  var d = window.ddpo;
  var $ = function (id) { return document.getElementById(id); };
  function pct(v) { return typeof v === "number" && isFinite(v) ? (100 * v).toFixed(1) + "%" : "—"; }
  function iv(x) { return Array.isArray(x) && typeof x[0] === "number" ? "[" + pct(x[0]) + ", " + pct(x[1]) + "]" : ""; }
  function row(cells, head) { return d.el("tr", null, cells.map(function (c) { return d.el(head ? "th" : "td", typeof c === "object" && c !== null && c.nodeType ? null : { text: String(c) }, typeof c === "object" && c !== null && c.nodeType ? [c] : null); })); }

  function card(q) {
    var v = q.votes, m = q.majority, a = q.agreement;
    return d.el("div", { class: "stat hr-card", "data-q": q.question }, [
      d.el("div", { class: "k", text: q.text }),
      d.el("div", { class: "v", "data-role": "rate", text: pct(v.rate) }),
      d.el("div", { class: "s", text: "tuned win rate over " + v.n + " votes, 95% CI " + iv(v.interval) }),
      d.el("div", { class: "s", text: v.wins + " tuned · " + v.ties + " tie · " + v.losses + " base · decisive " + pct(v.decisive) + " " + iv(v.decisiveInterval) }),
      d.el("div", { class: "s", "data-role": "majority", text: "majority of raters: " + pct(m.rate) + " of " + m.n + " comparisons " + iv(m.interval) }),
      d.el("div", { class: "s", "data-role": "kappa", text: "Fleiss κ " + (typeof a.kappa === "number" ? a.kappa.toFixed(3) : "—") + " · pairwise agreement " + pct(a.observed) + " (" + a.subjects + " comparisons with ≥ 2 raters)" }),
    ]);
  }

  async function load() {
    var r;
    try { r = await d.api("GET", "/api/human/results"); }
    catch (e) { d.toast(e.message, true); return; }
    $("hr-meta").textContent = r.votes + " votes from " + r.raters.length + " rater" + (r.raters.length === 1 ? "" : "s") + " on " + r.comparisons + " comparisons (" + r.prompts + " prompts) · " + r.ratersPerComparison.min + "–" + r.ratersPerComparison.max + " raters per comparison · " + r.db;
    var cards = $("hr-cards");
    cards.textContent = "";
    r.questionsAsked.forEach(function (qa) { cards.appendChild(card(r.questions[qa.key])); });
    $("hr-notes").textContent = "Win rate = (tuned + ½·tie) / votes; 95% percentile bootstrap over prompts (every seed and rater of a drawn prompt comes along); decisive = tuned / (tuned + base) with a Wilson interval. Majority per comparison: more tuned than base votes (tie votes abstain). Fleiss κ over tuned / base / tie." + (r.stale ? " " + r.stale + " votes on images no longer in the folder are left out." : "");

    var rw = $("hr-rewards");
    rw.textContent = "";
    rw.appendChild(row(["reward", "AI win rate", "agrees with the majority: preference", "appeal", "alignment"], true));
    r.rewards.forEach(function (x) {
      var ag = function (q) { var a = x.agreement[q]; return a.decisive ? pct(a.rate) + " of " + a.decisive : "—"; };
      rw.appendChild(row([x.reward, pct(x.rate) + " " + iv(x.interval), ag("general"), ag("appeal"), ag("alignment")]));
    });
    if (!r.rewards.length) rw.appendChild(row(["no reward scores in eval.json"]));

    var rt = $("hr-raters");
    rt.textContent = "";
    rt.appendChild(row(["rater", "comparisons answered"], true));
    r.raters.forEach(function (x) { rt.appendChild(row([x.rater, x.votes])); });

    var t = $("hr-rows");
    t.textContent = "";
    t.appendChild(row(["#", "prompt", "seed", "raters", "preference", "appeal", "alignment"], true));
    r.perComparison.forEach(function (c) {
      var cell = function (q) { var x = c.tally[q]; return x.tuned + " / " + x.base + " / " + x.tie + " → " + x.majority; };
      t.appendChild(row([c.comparison, c.prompt, c.seed === null ? "—" : c.seed, c.raters, cell("general"), cell("appeal"), cell("alignment")]));
    });
  }
  load();
})();
`;

export const HUMAN_CSS = `
/* human eval */
.warn { background: #fffaeb; border: 1px solid #fedf89; color: var(--warn); border-radius: 8px; padding: 8px 12px; font-size: 14px; max-width: 1000px; margin: 0 auto 12px; }
.ab-duel .side { position: relative; margin: 0; background: var(--panel); border: 2px solid var(--line); border-radius: 14px; padding: 14px; box-shadow: var(--shadow); }
.ab-duel img { display: block; width: 100%; aspect-ratio: 1; object-fit: contain; max-height: max(220px, calc(100vh - 520px)); image-rendering: pixelated; background: #fff; border-radius: 8px; }
.ab-duel .tag { position: absolute; top: 22px; left: 22px; background: rgba(255,255,255,.92); border: 1px solid var(--line); border-radius: 7px; padding: 3px 9px; font-size: 13px; font-weight: 600; }
.questions { max-width: 1000px; margin: 16px auto 0; padding: 8px 12px; }
.q { display: flex; align-items: center; justify-content: space-between; gap: 16px; padding: 8px 10px; border-radius: 8px; border: 2px solid transparent; }
.q.active { border-color: var(--accent); background: var(--accent-soft); }
.q-text { font-weight: 600; display: flex; align-items: center; gap: 10px; }
.q-num { display: inline-flex; width: 22px; height: 22px; border-radius: 50%; background: var(--line); align-items: center; justify-content: center; font-size: 12px; }
.q.answered .q-num { background: var(--good); color: #fff; }
.q-answers { display: flex; gap: 8px; }
.q-answers button { min-width: 96px; justify-content: center; }
.q-answers button[aria-pressed=true] { background: var(--good); border-color: var(--good); color: #fff; }
.q-answers button[aria-pressed=true] kbd { background: rgba(255,255,255,.2); color: #fff; border-color: rgba(255,255,255,.4); }
.keys { max-width: 1000px; margin: 4px auto 0; font-size: 13px; text-align: center; }
.hr-panel { margin-top: 16px; overflow-x: auto; }
.hr-cards { grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); }
.run-head .btn { white-space: nowrap; }
.hr-table { border-collapse: collapse; font-size: 13px; width: 100%; font-variant-numeric: tabular-nums; }
.hr-table th, .hr-table td { text-align: left; padding: 5px 10px 5px 0; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
.hr-table th { color: var(--muted); font-weight: 600; font-size: 12px; }
`;
