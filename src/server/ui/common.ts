// Browser script shared by every page: the JSON API helper, element builder, toast, number format.
// Plain ES2020 served as-is (no build step); no template literals, so it can live in a TS string.
export const COMMON_JS = `"use strict";
window.ddpo = (function () {
  async function api(method, url, body) {
    var init = { method: method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    var r = await fetch(url, init);
    var type = r.headers.get("content-type") || "";
    if (!r.ok) {
      var msg = "HTTP " + r.status;
      try {
        if (type.indexOf("json") >= 0) msg = (await r.json()).error || msg;
        else msg = (await r.text()) || msg;
      } catch (e) { /* keep the status */ }
      throw new Error(msg);
    }
    return type.indexOf("application/json") >= 0 ? r.json() : r;
  }

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "class") e.className = attrs[k];
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), attrs[k]);
      else if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) e.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }

  var toastTimer = null;
  function toast(text, isError) {
    var t = document.getElementById("toast");
    if (!t) { t = el("div", { id: "toast", class: "toast", role: "status" }); document.body.appendChild(t); }
    t.textContent = text;
    t.className = "toast show" + (isError ? " error" : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.className = "toast"; }, isError ? 5000 : 2200);
  }

  function fmt(v) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "—";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e7) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  async function download(url, fallbackName) {
    var r = await api("POST", url, {});
    var blob = await r.blob();
    var name = fallbackName;
    var cd = r.headers.get("content-disposition") || "";
    var m = /filename="([^"]+)"/.exec(cd);
    if (m) name = m[1];
    var a = el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    return { name: name, count: r.headers.get("x-pairs"), bytes: blob.size };
  }

  return { api: api, el: el, toast: toast, fmt: fmt, download: download };
})();
`;
