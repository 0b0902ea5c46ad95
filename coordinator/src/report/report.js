// hsm sweep report: draws every plot and table from the embedded JSON. Vanilla JS, no network.
// Sweep text is only ever placed with textContent or drawn on a canvas (never parsed as HTML).
"use strict";
(function () {
  var body = document.body;
  function showError(message) {
    var box = document.getElementById("js-errors");
    box.hidden = false;
    box.textContent += message + "\n";
    body.setAttribute("data-rendered", "error");
  }
  window.addEventListener("error", function (e) {
    showError("script error: " + e.message + " (line " + e.lineno + ")");
  });

  var D = JSON.parse(document.getElementById("report-data").textContent);
  var N = D.rows.idx.length;
  var STATUS_COLORS = {
    pending: "#9aa0a6", queued: "#b39ddb", running: "#42a5f5",
    completed: "#43a047", failed: "#e53935", cancelled: "#fb8c00"
  };

  // ---------- small helpers ----------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (k === "text") node.textContent = attrs[k];
        else if (k === "cls") node.className = attrs[k];
        else node.setAttribute(k, attrs[k]);
      }
    }
    (children || []).forEach(function (c) {
      if (c == null) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function section(id, title, note) {
    var s = el("section", { id: id }, [el("h2", { text: title })]);
    if (note) s.appendChild(el("p", { cls: "note", text: note }));
    document.getElementById("main").appendChild(s);
    return s;
  }
  function taskName(idx) {
    var s = String(idx);
    while (s.length < D.rows.width) s = "0" + s;
    return "task_" + s;
  }
  function fmtNum(v, digits) {
    if (v == null || !isFinite(v)) return "";
    digits = digits || 5;
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(Math.min(3, digits - 1));
    if (Number.isInteger(v)) return String(v);
    return String(parseFloat(v.toPrecision(digits)));
  }
  function fmtDur(ms) {
    if (ms == null || !isFinite(ms)) return "";
    if (ms < 1000) return Math.round(ms) + " ms";
    var s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(Math.round(s % 60)).padStart(2, "0") + "s";
    var h = Math.floor(m / 60);
    if (h < 48) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }
  function plural(n, word) { return n.toLocaleString("en") + " " + word + (n === 1 ? "" : "s"); }
  function canvas(width, height) {
    var ratio = window.devicePixelRatio || 1;
    var c = el("canvas", { cls: "plot" });
    c.width = Math.round(width * ratio);
    c.height = Math.round(height * ratio);
    c.style.width = width + "px";
    c.style.height = height + "px";
    var ctx = c.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.font = "11px system-ui, sans-serif";
    return { canvas: c, ctx: ctx, w: width, h: height };
  }
  function clip(text, n) { text = String(text); return text.length > n ? text.slice(0, n - 1) + "\u2026" : text; }
  function contentWidth() {
    var main = document.getElementById("main"), style = getComputedStyle(main);
    var inner = main.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return Math.max(640, Math.min(1450, Math.floor(inner) - 2));
  }
  // Viridis-like scale, t in [0, 1] (1 = best).
  var STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function colorAt(t) {
    t = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
    var i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i;
    var a = STOPS[i], b = STOPS[i + 1];
    return "rgb(" + Math.round(a[0] + (b[0] - a[0]) * f) + "," + Math.round(a[1] + (b[1] - a[1]) * f) +
      "," + Math.round(a[2] + (b[2] - a[2]) * f) + ")";
  }
  // A scale for a column: value -> [0, 1], or null for a missing value.
  function makeScale(col) {
    if (col.kind === "cat") {
      var n = Math.max(1, col.cats.length);
      return {
        kind: "cat", pos: function (v) { return v == null ? null : (v + 0.5) / n; },
        ticks: col.cats.map(function (c, i) { return { at: (i + 0.5) / n, label: c }; })
          .filter(function (_, i) { return n <= 24 || i % Math.ceil(n / 24) === 0; })
      };
    }
    var lo = Infinity, hi = -Infinity;
    col.values.forEach(function (v) { if (v != null) { if (v < lo) lo = v; if (v > hi) hi = v; } });
    if (lo === Infinity) { lo = 0; hi = 1; }
    // Log axis for values spread over decades and bunched low (a log-uniform learning rate),
    // not for a uniform range that happens to start near zero.
    var present = col.values.filter(function (v) { return v != null; }).sort(function (x, y) { return x - y; });
    var median = present.length ? present[present.length >> 1] : 0;
    var log = lo > 0 && hi / lo >= 100 && median < 0.2 * hi;
    var f = log ? Math.log : function (x) { return x; };
    var a = f(lo), b = f(hi);
    if (b === a) { a -= 1; b += 1; }
    var ticks = [];
    for (var i = 0; i <= 4; i++) {
      var x = a + (b - a) * i / 4;
      ticks.push({ at: i / 4, label: fmtNum(log ? Math.exp(x) : x, 3) });
    }
    return {
      kind: "num", log: log, pos: function (v) { return v == null ? null : (f(v) - a) / (b - a); },
      ticks: ticks
    };
  }

  // ---------- state ----------
  var metricIdx = -1, lowerBetter = true, brushes = {}, selected = null;
  if (D.metrics.length) {
    metricIdx = 0;
    // A metric named just "loss" first, else the first with "loss" in its name.
    var exact = -1, some = -1;
    D.metrics.forEach(function (m, i) {
      if (exact < 0 && /^loss$/i.test(m.name)) exact = i;
      if (some < 0 && /loss/i.test(m.name)) some = i;
    });
    metricIdx = exact >= 0 ? exact : some >= 0 ? some : 0;
    lowerBetter = D.metrics[metricIdx].lower_is_better;
  }
  function metric() { return metricIdx >= 0 ? D.metrics[metricIdx] : null; }
  // Axes of the parallel coordinates: every parameter, then the chosen metric.
  function axes() {
    var list = D.params.map(function (p) {
      return { key: "p:" + p.name, label: p.name, col: p, scale: makeScale(p) };
    });
    var m = metric();
    if (m) list.push({ key: "m:" + m.name, label: m.name, col: { kind: "num", values: m.values }, scale: makeScale({ kind: "num", values: m.values }), metric: true });
    return list;
  }
  // Row i's rank by the metric on the colour scale (0 = worst, 1 = best): ranks, not values,
  // so one outlier does not paint every other task the same colour.
  function goodness(values) {
    var order = [];
    for (var i = 0; i < values.length; i++) if (values[i] != null) order.push(i);
    order.sort(function (a, b) { return values[a] - values[b]; });
    var rank = new Float32Array(values.length).fill(-1), n = Math.max(1, order.length - 1);
    order.forEach(function (row, r) { rank[row] = order.length === 1 ? 1 : (lowerBetter ? 1 - r / n : r / n); });
    return function (i) { return rank[i] < 0 ? null : rank[i]; };
  }
  function recompute() {
    var list = axes();
    selected = new Uint8Array(N);
    var count = 0;
    for (var i = 0; i < N; i++) {
      var ok = true;
      for (var k = 0; k < list.length && ok; k++) {
        var b = brushes[list[k].key];
        if (!b) continue;
        var p = list[k].scale.pos(list[k].col.values[i]);
        ok = p != null && p >= b[0] && p <= b[1];
      }
      if (ok) { selected[i] = 1; count++; }
    }
    return count;
  }

  // ---------- summary ----------
  function renderSummary() {
    var s = D.summary;
    document.getElementById("subtitle").textContent =
      (s.active ? "running now \u00b7 " : "") + "generated " + s.generated + " \u00b7 hsm " + s.hsm_version;
    var sec = section("summary", "Summary");
    var cards = el("div", { cls: "cards" });
    cards.appendChild(el("div", { cls: "card" }, [el("div", { cls: "n", text: D.total.toLocaleString("en") }), el("div", { cls: "l", text: "tasks" })]));
    D.statuses.forEach(function (name, i) {
      if (!s.counts[i] && (name === "queued" || name === "running")) return;
      var dot = el("span", { cls: "dot" });
      dot.style.background = STATUS_COLORS[name];
      cards.appendChild(el("div", { cls: "card", "data-status": name }, [
        el("div", { cls: "n", text: s.counts[i].toLocaleString("en") }),
        el("div", { cls: "l" }, [dot, name])
      ]));
    });
    sec.appendChild(cards);
    var rows = [
      ["sweep id", s.sweep_id], ["created", s.created || ""],
      ["duration", s.duration_ms == null ? "" : fmtDur(s.duration_ms) + " (first start to last end)"],
      ["sources", s.sources.join(", ")], ["command (task 1)", s.command || ""], ["sweep file", s.sweep_file || ""],
      ["metrics", s.with_metrics ? plural(s.with_metrics, "task") + " reported metrics" : "none recorded"]
    ];
    if (s.wall_ms != null) rows.push(["task time", fmtDur(s.wall_ms) + " wall" + (s.cpu_ms != null ? ", " + fmtDur(s.cpu_ms) + " CPU" : "")]);
    var kv = el("table", { cls: "kv" });
    rows.forEach(function (r) { if (r[1] !== "") kv.appendChild(el("tr", null, [el("th", { text: r[0] }), el("td", { text: r[1] })])); });
    sec.appendChild(el("div", { style: "margin-top:10px" }, [kv]));
  }

  // ---------- controls ----------
  var countNote;
  function renderControls() {
    var sec = section("explore", "Parameters and metrics");
    var sampled = N < D.total;
    sec.appendChild(el("p", { cls: "note", id: "sample-note", "data-embedded": String(N), "data-total": String(D.total), text: sampled
      ? "Sampled " + N.toLocaleString("en") + " of " + D.total.toLocaleString("en") + " tasks for these plots and the best-runs table: the best " +
        D.limits.best_per_metric + " by each metric (both ways), up to " + D.limits.max_failures.toLocaleString("en") +
        " failed tasks, the rest spread evenly over the sweep."
      : "All " + plural(D.total, "task") + "." }));
    if (D.metrics_left_out || D.params_left_out)
      sec.appendChild(el("p", { cls: "note", text: "Left out: " + D.metrics_left_out + " rarer metric names, " + D.params_left_out + " rarer parameters (at most " + D.limits.max_columns + " of each)." }));
    var select = el("select", { id: "metric-select" });
    if (!D.metrics.length) {
      select.appendChild(el("option", { text: "(no metrics recorded)" }));
      select.disabled = true;
    }
    D.metrics.forEach(function (m, i) {
      var o = el("option", { value: String(i), text: m.name });
      if (i === metricIdx) o.selected = true;
      select.appendChild(o);
    });
    var dir = el("select", { id: "direction" }, [el("option", { value: "lower", text: "lower is better" }), el("option", { value: "higher", text: "higher is better" })]);
    dir.value = lowerBetter ? "lower" : "higher";
    dir.disabled = !D.metrics.length;
    var clear = el("button", { id: "clear-brushes", text: "clear filters" });
    countNote = el("span", { cls: "note", id: "selected-count" });
    sec.appendChild(el("div", { cls: "controls" }, [
      el("label", null, ["metric ", select]), el("label", null, ["best: ", dir]), clear, countNote
    ]));
    select.addEventListener("change", function () {
      metricIdx = Number(select.value);
      lowerBetter = D.metrics[metricIdx].lower_is_better;
      dir.value = lowerBetter ? "lower" : "higher";
      Object.keys(brushes).forEach(function (k) { if (k.indexOf("m:") === 0) delete brushes[k]; });
      update();
    });
    dir.addEventListener("change", function () { lowerBetter = dir.value === "lower"; update(); });
    clear.addEventListener("click", function () { brushes = {}; update(); });
    return sec;
  }

  // ---------- parallel coordinates ----------
  var pc = null;
  function renderParallel(sec) {
    var holder = el("div", { id: "parallel" });
    sec.appendChild(el("h2", { text: "Parallel coordinates", style: "margin-top:14px" }));
    sec.appendChild(el("p", { cls: "note", text: "Drag along an axis to keep only the tasks in that range (several axes combine); click an axis to clear its filter. Lines are coloured by their rank in the chosen metric (yellow = best, purple = worst); tasks without it are red (failed) or grey, at n/a." }));
    sec.appendChild(holder);
    pc = { holder: holder };
  }
  function drawParallel() {
    var list = axes();
    var W = contentWidth(), H = 410, top = 28, bottom = 66, left = 60, right = 80;
    var c = canvas(W, H);
    c.canvas.id = "pc-canvas";
    c.canvas.setAttribute("data-axes", String(list.length));
    pc.holder.replaceChildren(c.canvas);
    if (!list.length) return;
    var ctx = c.ctx, plotH = H - top - bottom;
    var xs = list.map(function (_, k) { return list.length === 1 ? W / 2 : left + (W - left - right) * k / (list.length - 1); });
    var NA = -0.07;
    function y(p) { return top + plotH * (1 - (p == null ? NA : p)); }
    var m = metric();
    var good = m ? goodness(m.values) : null;
    var buckets = [];
    for (var b = 0; b < 12; b++) buckets.push(new Path2D());
    var grey = new Path2D(), red = new Path2D(), faded = new Path2D();
    for (var i = 0; i < N; i++) {
      var path;
      if (!selected[i]) path = faded;
      else {
        var g = good ? good(i) : null;
        if (g == null) path = D.statuses[D.rows.status[i]] === "failed" ? red : grey;
        else path = buckets[Math.min(11, Math.floor(g * 12))];
      }
      for (var k = 0; k < list.length; k++) {
        var py = y(list[k].scale.pos(list[k].col.values[i]));
        if (k === 0) path.moveTo(xs[k], py); else path.lineTo(xs[k], py);
      }
    }
    var alpha = Math.max(0.08, Math.min(0.7, 60 / Math.sqrt(N + 1) / 4));
    ctx.lineWidth = 1;
    ctx.globalAlpha = Math.min(0.25, alpha);
    ctx.strokeStyle = "#c8ccd0"; ctx.stroke(faded);
    ctx.globalAlpha = alpha;
    ctx.strokeStyle = "#9aa0a6"; ctx.stroke(grey);
    ctx.strokeStyle = "#e53935"; ctx.stroke(red);
    buckets.forEach(function (p, b) { ctx.strokeStyle = colorAt((b + 0.5) / 12); ctx.stroke(p); });
    ctx.globalAlpha = 1;
    list.forEach(function (a, k) {
      var x = xs[k];
      ctx.strokeStyle = "#333"; ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + plotH); ctx.stroke();
      var br = brushes[a.key];
      if (br) {
        ctx.fillStyle = "rgba(9,105,218,0.18)"; ctx.strokeStyle = "#0969da";
        ctx.fillRect(x - 8, y(br[1]), 16, y(br[0]) - y(br[1]));
        ctx.strokeRect(x - 8, y(br[1]), 16, y(br[0]) - y(br[1]));
      }
      ctx.fillStyle = "#1f2328"; ctx.textAlign = "center";
      ctx.font = (a.metric ? "bold " : "") + "12px system-ui, sans-serif";
      ctx.fillText(clip(a.label, 22), x, H - bottom + 44);
      ctx.font = "10px system-ui, sans-serif"; ctx.fillStyle = "#59636e";
      if (a.scale.log) ctx.fillText("(log)", x, H - bottom + 57);
      ctx.fillText("n/a", x, y(null) + 4);
      ctx.textAlign = "right";
      a.scale.ticks.forEach(function (t) { ctx.fillText(clip(t.label, 14), x - 4, y(t.at) + 3); });
    });
    // Brushing.
    var drag = null;
    function axisAt(ev) {
      var r = c.canvas.getBoundingClientRect(), mx = ev.clientX - r.left;
      for (var k = 0; k < xs.length; k++) if (Math.abs(xs[k] - mx) < 14) return k;
      return -1;
    }
    function posAt(ev) {
      var r = c.canvas.getBoundingClientRect();
      return Math.max(0, Math.min(1, 1 - (ev.clientY - r.top - top) / plotH));
    }
    c.canvas.addEventListener("mousedown", function (ev) {
      var k = axisAt(ev);
      if (k < 0) return;
      drag = { k: k, from: posAt(ev), moved: false };
      ev.preventDefault();
      // Listened for only while dragging, so a release outside the canvas still ends the drag.
      window.addEventListener("mouseup", function onUp() {
        window.removeEventListener("mouseup", onUp);
        if (!drag) return;
        if (!drag.moved) delete brushes[list[drag.k].key];
        drag = null;
        update();
      });
    });
    c.canvas.addEventListener("mousemove", function (ev) {
      c.canvas.style.cursor = axisAt(ev) >= 0 ? "crosshair" : "default";
      if (!drag) return;
      var to = posAt(ev);
      if (Math.abs(to - drag.from) > 0.01) drag.moved = true;
      if (drag.moved) {
        var lo = Math.min(drag.from, to), hi = Math.max(drag.from, to);
        brushes[list[drag.k].key] = [lo, hi];
        ctx.fillStyle = "rgba(9,105,218,0.08)";
        ctx.fillRect(xs[drag.k] - 8, y(hi), 16, y(lo) - y(hi));
      }
    });
  }

  // ---------- scatter plots ----------
  var scatterHolder;
  function renderScatterSection() {
    var sec = section("scatter", "Metric against each parameter", "Categorical parameters are spread (jittered) within their category; selected tasks are coloured, the others grey.");
    scatterHolder = el("div", { cls: "scatters", id: "scatters" });
    sec.appendChild(scatterHolder);
  }
  function jitter(i) { var x = Math.sin(i * 12.9898 + 78.233) * 43758.5453; return x - Math.floor(x) - 0.5; }
  function drawScatters() {
    scatterHolder.replaceChildren();
    var m = metric();
    if (!m) { scatterHolder.appendChild(el("p", { cls: "note", text: "No metrics recorded: nothing to plot against the parameters." })); return; }
    if (!D.params.length) { scatterHolder.appendChild(el("p", { cls: "note", text: "The sweep has no parameters." })); return; }
    var ys = makeScale({ kind: "num", values: m.values }), good = goodness(m.values);
    var W = 300, H = 230, l = 52, r = 10, t = 10, b = 34;
    D.params.forEach(function (p) {
      var xs = makeScale(p), c = canvas(W, H), ctx = c.ctx;
      c.canvas.className = "plot scatter";
      var pw = W - l - r, ph = H - t - b;
      ctx.strokeStyle = "#d1d9e0"; ctx.strokeRect(l, t, pw, ph);
      var width = p.kind === "cat" ? 0.7 / Math.max(1, p.cats.length) : 0;
      var faded = new Path2D(), drawn = 0, size = N > 3000 ? 1.6 : 2.6;
      var colored = [];
      for (var i = 0; i < N; i++) {
        var yv = ys.pos(m.values[i]), xv = xs.pos(p.values[i]);
        if (yv == null || xv == null) continue;
        var px = l + pw * (xv + width * jitter(i + 1)), py = t + ph * (1 - yv);
        if (selected[i]) colored.push([px, py, good(i)]);
        else { faded.moveTo(px + size, py); faded.arc(px, py, size, 0, 6.2832); }
        drawn++;
      }
      ctx.fillStyle = "rgba(160,165,170,0.35)"; ctx.fill(faded);
      ctx.globalAlpha = 0.8;
      colored.forEach(function (q) { ctx.fillStyle = colorAt(q[2]); ctx.beginPath(); ctx.arc(q[0], q[1], size, 0, 6.2832); ctx.fill(); });
      ctx.globalAlpha = 1;
      ctx.fillStyle = "#59636e"; ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "right";
      [0, 0.5, 1].forEach(function (f) { ctx.fillText(fmtNum(inverse(ys, m.values, f), 3), l - 4, t + ph * (1 - f) + 3); });
      ctx.textAlign = "center";
      var ticks = xs.ticks.length > 6 ? xs.ticks.filter(function (_, i) { return i % Math.ceil(xs.ticks.length / 6) === 0; }) : xs.ticks;
      ticks.forEach(function (tk) { ctx.fillText(clip(tk.label, 10), l + pw * tk.at, H - b + 13); });
      ctx.save(); ctx.translate(12, t + ph / 2); ctx.rotate(-Math.PI / 2); ctx.fillText(clip(m.name, 30), 0, 0); ctx.restore();
      c.canvas.setAttribute("data-points", String(drawn));
      scatterHolder.appendChild(el("figure", null, [c.canvas, el("figcaption", { text: p.name + (xs.log ? " (log)" : "") })]));
    });
  }
  function inverse(scale, values, f) {
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) { if (v != null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    if (lo === Infinity) return null;
    if (scale.log) return Math.exp(Math.log(lo) + (Math.log(hi) - Math.log(lo)) * f);
    return lo + (hi - lo) * f;
  }

  // ---------- best runs ----------
  var bestHolder, bestSort = null;
  var BEST_N = 50;
  function renderBestSection() {
    var sec = section("best", "Best runs");
    sec.appendChild(el("p", { cls: "note", id: "best-note" }));
    bestHolder = el("div", { cls: "scroll" });
    sec.appendChild(bestHolder);
  }
  function bestColumns() {
    var cols = [
      { name: "task", get: function (i) { return D.rows.idx[i]; }, show: function (i) { return taskName(D.rows.idx[i]); } },
      { name: "status", get: function (i) { return D.statuses[D.rows.status[i]]; } },
      { name: "source", get: function (i) { var s = D.rows.source[i]; return s < 0 ? "" : D.summary.sources[s]; } },
      { name: "attempt", get: function (i) { return D.rows.attempt[i]; }, num: true }
    ];
    var m = metric();
    var ordered = m ? [m].concat(D.metrics.filter(function (x) { return x !== m; })) : [];
    ordered.forEach(function (x) { cols.push({ name: x.name, get: function (i) { return x.values[i]; }, num: true, metric: true }); });
    D.params.forEach(function (p) {
      cols.push({ name: p.name, num: p.kind === "num", get: function (i) { var v = p.values[i]; return v == null ? null : p.kind === "cat" ? p.cats[v] : v; } });
    });
    cols.push({ name: "duration", num: true, get: function (i) { return D.rows.duration[i]; }, show: function (i) { return fmtDur(D.rows.duration[i]); } });
    D.usage.forEach(function (u) { cols.push({ name: u.name, num: true, get: function (i) { return u.values[i]; } }); });
    return cols;
  }
  function drawBest() {
    var m = metric(), picked = [];
    for (var i = 0; i < N; i++) if (selected[i] && (!m || m.values[i] != null)) picked.push(i);
    if (m) picked.sort(function (a, b) { var d = m.values[a] - m.values[b]; return (lowerBetter ? d : -d) || a - b; });
    var total = picked.length;
    picked = picked.slice(0, BEST_N);
    var cols = bestColumns();
    if (bestSort) {
      var col = cols.filter(function (c) { return c.name === bestSort.name; })[0];
      if (col) picked.sort(function (a, b) {
        var x = col.get(a), y = col.get(b);
        if (x == null && y == null) return 0;
        if (x == null) return 1;
        if (y == null) return -1;
        var d = x < y ? -1 : x > y ? 1 : 0;
        return bestSort.asc ? d : -d;
      });
    }
    document.getElementById("best-note").textContent = m
      ? "Top " + Math.min(BEST_N, total) + " of " + total.toLocaleString("en") + " selected tasks with " + m.name + " (" + (lowerBetter ? "lowest" : "highest") + " first). Click a header to sort by it."
      : "No metrics recorded: the first " + Math.min(BEST_N, total) + " selected tasks. Click a header to sort by it.";
    var table = el("table", { cls: "sortable", id: "best-table", "data-rows": String(picked.length) });
    var head = el("tr", null, [el("th", { cls: "num", text: "#" })]);
    cols.forEach(function (c) {
      var th = el("th", { cls: (c.num ? "num" : "") + (bestSort && bestSort.name === c.name ? (bestSort.asc ? " sorted-asc" : " sorted-desc") : ""), text: c.name });
      th.addEventListener("click", function () {
        bestSort = { name: c.name, asc: bestSort && bestSort.name === c.name ? !bestSort.asc : true };
        drawBest();
      });
      head.appendChild(th);
    });
    table.appendChild(el("thead", null, [head]));
    var tbody = el("tbody");
    picked.forEach(function (i, rank) {
      var tr = el("tr", null, [el("td", { cls: "num", text: String(rank + 1) })]);
      cols.forEach(function (c) {
        var v = c.show ? c.show(i) : c.get(i);
        var td = el("td", { cls: c.num ? "num" : "", text: v == null ? "" : typeof v === "number" ? fmtNum(v) : String(v) });
        if (c.name === "status") td.className = "status status-" + v;
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    bestHolder.replaceChildren(table);
  }

  // ---------- timeline ----------
  function renderTimeline() {
    var T = D.timeline;
    var sec = section("timeline", "Timeline", T.started === 0 ? "No task has started." : T.bars
      ? "Each started task (its current attempt) is a bar in its source's lane, coloured by status."
      : "Binned (" + plural(T.started, "started task") + "): the shaded height is how many tasks ran at once on average per " + fmtDur(T.bin_ms) + "; red ticks are failures ending there.");
    if (T.started === 0) return;
    var W = contentWidth(), laneH = 54, left = 110, right = 16, top = 8, axisH = 26;
    var H = top + laneH * T.lanes.length + axisH;
    var c = canvas(W, H), ctx = c.ctx, pw = W - left - right;
    c.canvas.id = "timeline-canvas";
    c.canvas.setAttribute("data-mode", T.bars ? "bars" : "bins");
    function x(t) { return left + pw * t / T.span; }
    T.lanes.forEach(function (name, lane) {
      var y0 = top + lane * laneH;
      ctx.fillStyle = lane % 2 ? "#f6f8fa" : "#ffffff"; ctx.fillRect(left, y0, pw, laneH);
      ctx.fillStyle = "#1f2328"; ctx.textAlign = "right"; ctx.font = "12px system-ui, sans-serif";
      ctx.fillText(clip(name, 16), left - 8, y0 + laneH / 2 + 4);
    });
    if (T.bars) {
      var B = T.bars, ends = T.lanes.map(function () { return []; }), slot = new Array(B.idx.length);
      var order = B.idx.map(function (_, i) { return i; }).sort(function (a, b) { return B.start[a] - B.start[b]; });
      order.forEach(function (i) {
        var e = ends[B.lane[i]], s = 0;
        while (s < e.length && e[s] > B.start[i]) s++;
        e[s] = B.end[i]; slot[i] = s;
      });
      order.forEach(function (i) {
        var rows = Math.max(1, ends[B.lane[i]].length), h = (laneH - 6) / rows;
        var y0 = top + B.lane[i] * laneH + 3 + slot[i] * h;
        ctx.fillStyle = STATUS_COLORS[D.statuses[B.status[i]]];
        // A pixel of gap after a bar wide enough to spare it, so back-to-back tasks stay apart.
        var w = x(B.end[i]) - x(B.start[i]);
        ctx.fillRect(x(B.start[i]), y0, Math.max(1, w > 3 ? w - 1 : w), Math.max(1, h - (h > 4 ? 1 : 0)));
      });
    } else {
      T.running.forEach(function (bins, lane) {
        var peak = Math.max.apply(null, bins.concat([1e-9])), y0 = top + lane * laneH, bw = pw / bins.length;
        ctx.fillStyle = "rgba(67,160,71,0.75)";
        bins.forEach(function (v, b) { var h = (laneH - 8) * v / peak; ctx.fillRect(left + b * bw, y0 + laneH - 2 - h, Math.ceil(bw), h); });
        var fpeak = Math.max.apply(null, T.failed[lane].concat([1]));
        ctx.fillStyle = "#e53935";
        T.failed[lane].forEach(function (n, b) { if (n) ctx.fillRect(left + b * bw, y0 + 2, Math.max(1, Math.ceil(bw)), 3 + 10 * n / fpeak); });
        ctx.fillStyle = "#59636e"; ctx.textAlign = "left"; ctx.font = "10px system-ui, sans-serif";
        ctx.fillText("peak " + fmtNum(Math.round(peak * 10) / 10) + " running", left + 4, y0 + 12);
      });
    }
    ctx.fillStyle = "#59636e"; ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "center";
    for (var k = 0; k <= 6; k++) {
      var t = T.span * k / 6, px = x(t);
      ctx.fillRect(px, top + laneH * T.lanes.length, 1, 4);
      ctx.fillText("+" + fmtDur(t), Math.min(W - 30, Math.max(left + 20, px)), H - 8);
    }
    sec.appendChild(c.canvas);
    var legend = el("div", { cls: "legend" });
    D.statuses.forEach(function (name) { var d = el("span", { cls: "dot" }); d.style.background = STATUS_COLORS[name]; legend.appendChild(el("span", null, [d, " " + name])); });
    if (T.bars) sec.appendChild(legend);
  }

  // ---------- histogram ----------
  function renderHistogram() {
    var Hd = D.histogram;
    var sec = section("durations", "Task durations", Hd.edges.length ? "Completed (green) and failed (red) tasks by the duration of their current attempt" + (Hd.log ? ", on a logarithmic axis." : ".") : "No task has ended yet.");
    if (!Hd.edges.length) return;
    var W = Math.min(900, contentWidth()), H = 240, l = 50, r = 14, t = 10, b = 34;
    var c = canvas(W, H), ctx = c.ctx, pw = W - l - r, ph = H - t - b, n = Hd.completed.length;
    c.canvas.id = "histogram-canvas";
    var peak = 1;
    for (var i = 0; i < n; i++) peak = Math.max(peak, Hd.completed[i] + Hd.failed[i]);
    var bw = pw / n;
    for (i = 0; i < n; i++) {
      var hc = ph * Hd.completed[i] / peak, hf = ph * Hd.failed[i] / peak;
      ctx.fillStyle = "#43a047"; ctx.fillRect(l + i * bw + 1, t + ph - hc, bw - 2, hc);
      ctx.fillStyle = "#e53935"; ctx.fillRect(l + i * bw + 1, t + ph - hc - hf, bw - 2, hf);
    }
    ctx.strokeStyle = "#d1d9e0"; ctx.strokeRect(l, t, pw, ph);
    ctx.fillStyle = "#59636e"; ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "right";
    ctx.fillText(String(peak), l - 4, t + 8); ctx.fillText("0", l - 4, t + ph);
    ctx.textAlign = "center";
    for (var k = 0; k <= n; k += Math.ceil(n / 6)) ctx.fillText(fmtDur(Hd.edges[k]), l + k * bw, H - b + 14);
    ctx.fillText("tasks per bin; duration \u2192", l + pw / 2, H - 4);
    sec.appendChild(c.canvas);
  }

  // ---------- errors ----------
  function renderErrors() {
    var failed = D.summary.counts[D.statuses.indexOf("failed")];
    var sec = section("errors", "Errors", failed ? "Failed tasks grouped by cause (numbers, ids, paths and quoted values masked, as `sweep errors` shows them), largest group first." : "No task failed.");
    var list = el("div", { id: "error-groups", "data-groups": String(D.errors.length) });
    D.errors.forEach(function (g) {
      var box = el("div", { cls: "err" }, [
        el("div", null, [el("span", { cls: "count", text: plural(g.count, "task") }), el("span", { cls: "reason", text: g.reason })]),
        el("div", { cls: "examples", text: "e.g. " + g.examples.join(", ") + (g.count > g.examples.length ? ", \u2026" : "") })
      ]);
      if (g.shared) box.appendChild(el("div", { cls: "shared", text: g.shared }));
      if (g.tail != null) {
        box.appendChild(el("details", null, [el("summary", { text: "stderr tail of " + g.tail_of }), el("pre", { cls: "tail", text: g.tail })]));
      }
      list.appendChild(box);
    });
    sec.appendChild(list);
    if (D.errors_left_out) sec.appendChild(el("p", { cls: "note", text: plural(D.errors_left_out, "smaller group") + " not shown." }));
  }

  // ---------- sources ----------
  function renderSources() {
    var sec = section("sources", "Sources");
    // data-attempts: what the test reads to know the figures came through.
    var attempts = D.sources.reduce(function (n, s) { return n + s.attempts; }, 0);
    var table = el("table", { id: "sources-table", "data-sources": String(D.sources.length), "data-attempts": String(attempts) });
    // Figures per attempt (core::stats): a task retried on a source counts once in "tasks".
    var headers = ["source", "tasks", "attempts", "completed", "failed", "cancelled", "running", "mean duration", "median duration", "completed / min", "CPU", "max RSS"];
    table.appendChild(el("thead", null, [el("tr", null, headers.map(function (h, i) { return el("th", { cls: i ? "num" : "", text: h }); }))]));
    var tbody = el("tbody");
    D.sources.forEach(function (s) {
      var ms = function (sec) { return sec == null ? null : sec * 1000; };
      var cells = [s.source, s.tasks, s.attempts, s.completed, s.failed, s.cancelled, s.running, fmtDur(ms(s.mean_s)), fmtDur(ms(s.median_s)),
        s.throughput_per_min == null ? "" : fmtNum(Math.round(s.throughput_per_min * 10) / 10), fmtDur(ms(s.cpu_s)),
        s.max_rss_mb == null ? "" : Math.round(s.max_rss_mb) + " MB"];
      tbody.appendChild(el("tr", null, cells.map(function (v, i) { return el("td", { cls: i ? "num" : "", text: typeof v === "number" ? v.toLocaleString("en") : String(v) }); })));
    });
    table.appendChild(tbody);
    sec.appendChild(el("div", { cls: "scroll" }, [table]));
  }

  // Opened as report.html#selfcheck: filters the best half by the chosen metric on its axis and
  // sorts the best-runs table by its first parameter, as a reader would, and records what that
  // gave in data-selfcheck (the browser test reads it from the dumped DOM).
  function selfCheck() {
    var list = axes(), last = list[list.length - 1];
    if (!last || !last.metric) { body.setAttribute("data-selfcheck", "no-metric"); return; }
    brushes[last.key] = lowerBetter ? [0, 0.5] : [0.5, 1];
    update();
    var header = Array.prototype.filter.call(document.querySelectorAll("#best-table th"), function (th) {
      return D.params.length && th.textContent === D.params[0].name;
    })[0];
    if (header) header.click();
    var table = document.getElementById("best-table");
    body.setAttribute("data-selfcheck", "selected=" + countNote.getAttribute("data-selected") +
      ";rows=" + table.getAttribute("data-rows") + ";sorted=" +
      (table.querySelector("th.sorted-asc") || { textContent: "" }).textContent);
  }

  function update() {
    var count = recompute();
    countNote.textContent = count.toLocaleString("en") + " of " + N.toLocaleString("en") + " shown tasks selected";
    countNote.setAttribute("data-selected", String(count));
    drawParallel();
    drawScatters();
    drawBest();
  }

  try {
    renderSummary();
    var explore = renderControls();
    renderParallel(explore);
    renderScatterSection();
    renderBestSection();
    update();
    renderTimeline();
    renderHistogram();
    renderErrors();
    renderSources();
    if (location.hash === "#selfcheck") selfCheck();
    if (body.getAttribute("data-rendered") !== "error") body.setAttribute("data-rendered", "ok");
  } catch (e) {
    showError("report failed to render: " + (e && e.stack ? e.stack : e));
  }
})();
