// The labelling page: a prompt and two images; 1 / 2 / 3 / space for left / right / tie / skip,
// u to undo. The rater id is asked once and kept in localStorage.
export const LABEL_BODY = `
<section id="gate" class="rater-gate panel hidden">
  <h1>Who is labelling?</h1>
  <p class="muted">Your votes are stored under this name, and you will see each pair once.</p>
  <form id="gate-form">
    <input type="text" id="rater-input" name="rater" maxlength="64" placeholder="your name or initials" autocomplete="off" required>
    <button class="primary" type="submit">Start</button>
  </form>
</section>

<section id="labeller" class="hidden">
  <div class="label-head">
    <div>
      <div class="prompt-label">Which image fits the prompt better?</div>
      <div class="prompt" id="prompt"></div>
    </div>
    <div class="progress">
      <span id="progress-text">0 / 0</span> labelled
      <div class="bar"><div id="progress-bar"></div></div>
    </div>
  </div>
  <div id="pair" class="duel">
    <div class="choice" id="left" role="button" tabindex="0" aria-label="left image is better">
      <span class="tag"><kbd>1</kbd> left</span>
      <img id="left-img" alt="left image">
    </div>
    <div class="choice" id="right" role="button" tabindex="0" aria-label="right image is better">
      <span class="tag"><kbd>2</kbd> right</span>
      <img id="right-img" alt="right image">
    </div>
  </div>
  <div class="actions">
    <button id="btn-left" type="button"><kbd>1</kbd> Left is better</button>
    <button id="btn-tie" type="button"><kbd>3</kbd> Tie</button>
    <button id="btn-right" type="button"><kbd>2</kbd> Right is better</button>
    <button id="btn-skip" type="button"><kbd>space</kbd> Skip</button>
    <button id="btn-undo" type="button"><kbd>u</kbd> Undo</button>
  </div>
</section>

<section id="done" class="done-box panel hidden">
  <div class="big">✓</div>
  <h1>All pairs labelled</h1>
  <p class="muted" id="done-text"></p>
  <button id="btn-undo-done" type="button"><kbd>u</kbd> Undo the last vote</button>
</section>

<div class="exports" id="exports">
  Export labelled pairs:
  <button id="export-jsonl" type="button">JSONL</button>
  <button id="export-parquet" type="button">Parquet (Pick-a-Pic)</button>
</div>
`;

export const LABEL_JS = `"use strict";
(function () {
  var d = window.ddpo;
  var KEY = "ddpo.rater";
  var rater = null;
  var current = null;
  var busy = false;
  var $ = function (id) { return document.getElementById(id); };

  function show(id) {
    ["gate", "labeller", "done"].forEach(function (s) { $(s).classList.toggle("hidden", s !== id); });
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

  function render(data) {
    var p = data.progress;
    $("progress-text").textContent = p.done + " / " + p.total;
    $("progress-bar").style.width = (p.total ? (100 * p.done / p.total) : 0) + "%";
    current = data.pair;
    if (!current) {
      $("done-text").textContent = p.total === 0
        ? "The store has no pairs yet: fill it with diffusion-dpo pairs."
        : "You answered all " + p.total + " pairs. Thank you!";
      show("done");
      return;
    }
    $("pair").setAttribute("data-pair-id", String(current.id));
    $("pair").setAttribute("data-left-side", current.left.side);
    $("prompt").textContent = current.prompt;
    $("left-img").src = current.left.url;
    $("right-img").src = current.right.url;
    $("left").classList.remove("picked");
    $("right").classList.remove("picked");
    show("labeller");
  }

  async function request(method, url, body) {
    busy = true;
    try { return await d.api(method, url, body); }
    catch (e) { d.toast(e.message, true); return null; }
    finally { busy = false; }
  }

  async function load() {
    var data = await request("GET", "/api/label/next?rater=" + encodeURIComponent(rater));
    if (data) render(data);
  }

  async function vote(which) {
    if (busy || !current) return;
    var choice = which === "left" ? current.left.side : which === "right" ? current.right.side : which;
    if (which === "left" || which === "right") $(which).classList.add("picked");
    var data = await request("POST", "/api/label/vote", { rater: rater, pairId: current.id, choice: choice });
    if (data) render(data);
  }

  async function undo() {
    if (busy) return;
    var data = await request("POST", "/api/label/undo", { rater: rater });
    if (!data) return;
    if (data.undone === null) d.toast("Nothing to undo");
    else d.toast("Vote undone");
    render(data);
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
  $("left").addEventListener("click", function () { vote("left"); });
  $("right").addEventListener("click", function () { vote("right"); });
  $("btn-left").addEventListener("click", function () { vote("left"); });
  $("btn-right").addEventListener("click", function () { vote("right"); });
  $("btn-tie").addEventListener("click", function () { vote("tie"); });
  $("btn-skip").addEventListener("click", function () { vote("skip"); });
  $("btn-undo").addEventListener("click", undo);
  $("btn-undo-done").addEventListener("click", undo);

  document.addEventListener("keydown", function (e) {
    if (!rater || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    var k = e.key;
    var action = k === "1" ? "left" : k === "2" ? "right" : k === "3" ? "tie" : k === " " ? "skip" : (k === "u" || k === "U") ? "undo" : null;
    if (!action) return;
    e.preventDefault();
    if (e.repeat) return;
    if (action === "undo") undo(); else vote(action);
  });

  async function exportAs(kind) {
    try {
      var r = await d.download("/api/export/" + kind, kind === "jsonl" ? "preferences.jsonl" : "preferences.parquet");
      d.toast("Exported " + (r.count === null ? "" : r.count + " pairs ") + "to " + r.name);
    } catch (e) { d.toast(e.message, true); }
  }
  $("export-jsonl").addEventListener("click", function () { exportAs("jsonl"); });
  $("export-parquet").addEventListener("click", function () { exportAs("parquet"); });

  var saved = localStorage.getItem(KEY);
  if (saved) start(saved);
  else { show("gate"); $("rater-input").focus(); }
})();
`;
