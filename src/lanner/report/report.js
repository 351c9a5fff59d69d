// lanner report: builds the whole page from the JSON in #report-data.
// Safety rule: user data only ever reaches the DOM through textContent / setAttribute, never as markup.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const SVGNS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#ea8a00", "#7c3aed", "#0891b2", "#be185d", "#4b5563"];
  const main = document.getElementById("main");

  // ---------------------------------------------------------------- DOM helpers
  function fill(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.append(typeof c === "object" ? c : String(c)); // strings become text nodes
    }
    return node;
  }
  const el = (tag, attrs, ...kids) => fill(document.createElement(tag), attrs, kids);
  const sv = (tag, attrs, ...kids) => fill(document.createElementNS(SVGNS, tag), attrs, kids);

  function fmt(v, digits) {
    if (v === null || v === undefined || v === "") return "–";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
      return String(Number(v.toFixed(digits === undefined ? 4 : digits)));
    }
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  const pct = (v) => (typeof v === "number" ? (100 * v).toFixed(1) + "%" : "–");
  const seconds = (s) => (typeof s !== "number" ? "–" : s < 120 ? s.toFixed(1) + " s" :
    s < 7200 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(2) + " h");
  const className = (i) => (D.classes[i] !== undefined ? D.classes[i] : "class " + i);

  function section(id, title, ...kids) {
    const s = el("section", { id: id }, el("h2", { text: title }), ...kids);
    main.append(s);
    document.getElementById("nav").append(el("a", { href: "#" + id, text: title }));
    return s;
  }
  function stat(label, value) { return el("div", { class: "stat" }, el("b", { text: value }), el("span", { text: label })); }

  // A key/value table for any JSON value (config, data check, hardware); nested objects nest.
  function valueNode(v, depth) {
    depth = depth || 0;
    if (Array.isArray(v) && v.length && v.every((x) => x && typeof x === "object" && !Array.isArray(x))) {
      return recordTable(v);
    }
    if (Array.isArray(v)) return el("span", { text: v.map((x) => fmt(x)).join(", ") || "[]" });
    if (v && typeof v === "object") {
      if (depth > 4) return el("span", { text: JSON.stringify(v) });
      return el("table", { class: "kv" }, Object.entries(v).map(([k, x]) =>
        el("tr", {}, el("td", { text: k }), el("td", {}, valueNode(x, depth + 1)))));
    }
    return el("span", { text: fmt(v) });
  }
  function recordTable(rows) {
    const keys = [];
    rows.forEach((r) => Object.keys(r).forEach((k) => { if (!keys.includes(k)) keys.push(k); }));
    return el("div", { class: "scroll" }, el("table", {},
      el("tr", {}, keys.map((k) => el("th", { text: k }))),
      rows.map((r) => el("tr", {}, keys.map((k) => el("td", {}, valueNode(r[k], 5)))))));
  }

  // ---------------------------------------------------------------- header and summary
  function header() {
    const m = D.metrics || {};
    document.getElementById("title").textContent = "lanner report: " + D.run;
    const head = D.task === "detect" ? "mAP " + fmt(m.map, 3) : "accuracy " + pct(m.accuracy);
    const parts = [D.task];
    if (D.classes.length) parts.push(D.classes.length + " classes");
    if (m.num_images !== undefined) parts.push(head + " on " + m.num_images + " " + (m.split || "eval") + " images");
    document.getElementById("subtitle").textContent = parts.join(" · ");
    if (D.problems.length) {
      const box = document.getElementById("problems");
      box.hidden = false;
      box.append(el("b", { text: "Some parts of the run could not be read: " }),
        el("ul", {}, D.problems.map((p) => el("li", { text: p }))));
    }
  }

  function summary() {
    const c = D.config || {};
    const h = D.history || {};
    const modelKeys = ["task", "model", "pretrained", "data", "format", "image_size", "batch_size", "epochs",
      "optimizer", "lr", "weight_decay", "schedule", "augment", "balance", "seed", "device", "precision"];
    const model = {};
    modelKeys.forEach((k) => { if (c[k] !== undefined && c[k] !== null) model[k] = c[k]; });
    if (model.schedule && typeof model.schedule === "object") model.schedule = model.schedule.name;
    const times = (h.epoch_time_s || []).filter((x) => typeof x === "number");
    const ips = (h.images_per_s || []).filter((x) => typeof x === "number");
    const timing = {
      "epochs trained": (h.epoch || []).length,
      "training time": seconds(times.reduce((a, b) => a + b, 0)),
      "mean epoch time": times.length ? seconds(times.reduce((a, b) => a + b, 0) / times.length) : "–",
      "mean images / s": ips.length ? fmt(ips.reduce((a, b) => a + b, 0) / ips.length, 1) : "–",
      "best epoch": bestEpoch(),
    };
    section("summary", "Run summary",
      el("div", { class: "cards" }, headlineStats()),
      el("div", { class: "grid" },
        el("div", {}, el("h3", { text: "Model" }), valueNode(model)),
        el("div", {}, el("h3", { text: "Timings" }), valueNode(timing)),
        el("div", {}, el("h3", { text: "Hardware" }),
          D.hardware ? valueNode(D.hardware) : el("p", { class: "muted", text: "not recorded" }))),
      el("h3", { text: "Segments (start and each resume)" }), segmentsTable(),
      el("h3", { text: "Data check" }), dataCheck(),
      el("details", {}, el("summary", { text: "Full config (config.yaml)" }), valueNode(c)));
  }

  function headlineStats() {
    const m = D.metrics || {};
    const keys = D.task === "detect" ? [["mAP", "map"], ["mAP@50", "map50"], ["mAP@75", "map75"], ["mAR@100", "mar_100"]]
      : [["accuracy", "accuracy"], ["top-5 accuracy", "top5_accuracy"]];
    const out = keys.filter(([, k]) => typeof m[k] === "number").map(([label, k]) => stat(label, pct(m[k])));
    if (m.macro_avg && typeof m.macro_avg.f1 === "number") out.push(stat("macro F1", pct(m.macro_avg.f1)));
    const alone = m.detector_alone;  // detect-then-classify: the detector on its own, beside
    if (alone && typeof alone.map === "number") out.push(stat("detector alone mAP" + (alone.class_agnostic ? " (any class)" : ""), pct(alone.map)));
    if (m.num_images !== undefined) out.push(stat((m.split || "eval") + " images", fmt(m.num_images)));
    if (!out.length) out.push(el("p", { class: "muted", text: "No evaluation yet (metrics.json missing)." }));
    return out;
  }

  function bestEpoch() {
    const h = D.history || {};
    const key = (D.config && D.config.monitor) || (D.task === "detect" ? "val_map" : "val_acc");
    const vals = h[key];
    if (!vals || !vals.length) return "–";
    const lower = key.endsWith("loss");
    let best = -1;
    vals.forEach((v, i) => {
      if (typeof v === "number" && (best < 0 || (lower ? v < vals[best] : v > vals[best]))) best = i;
    });
    return best < 0 ? "–" : "epoch " + fmt(h.epoch[best]) + " (" + key + " " + fmt(vals[best]) + ")";
  }

  function segmentsTable() {
    const segs = D.segments || [];
    if (!segs.length) return el("p", { class: "muted", text: "segments.json not found" });
    const h = D.history || {};
    const change = (k, v) => k + ": " + (Array.isArray(v) && v.length === 2 ? fmt(v[0]) + " → " + fmt(v[1]) : fmt(v));
    return el("table", {},
      el("tr", {}, ["#", "reason", "start epoch", "start step", "started", "epochs", "time", "what changed"]
        .map((t) => el("th", { text: t }))),
      segs.map((s, i) => {
        const idx = s.index !== undefined ? s.index : i;
        const mine = (h.segment || []).map((x, j) => (x === idx ? j : -1)).filter((j) => j >= 0);
        const t = mine.reduce((a, j) => a + ((h.epoch_time_s || [])[j] || 0), 0);
        const changes = Object.entries(s.changes || {}).map(([k, v]) => change(k, v)).join("; ");
        return el("tr", {}, el("td", { text: fmt(idx) }), el("td", { text: fmt(s.reason) }),
          el("td", { class: "num", text: fmt(s.start_epoch) }), el("td", { class: "num", text: fmt(s.start_step) }),
          el("td", { text: fmt(s.time) }), el("td", { class: "num", text: mine.length }),
          el("td", { class: "num", text: mine.length ? seconds(t) : "–" }), el("td", { text: changes || "–" }));
      }));
  }

  // One readable line per data problem: "path: problem (what lanner did)".
  function findingText(x) {
    if (!x || typeof x !== "object") return fmt(x);
    const where = x.path ? x.path + ": " : "";
    const what = x.problem || x.message || JSON.stringify(x);
    return where + what + (x.action ? " (" + x.action + ")" : "");
  }
  const blank = (v) => v === null || v === undefined || v === "" ||
    (typeof v === "object" && !Array.isArray(v) && !Object.keys(v).length) || (Array.isArray(v) && !v.length);

  function dataCheck() {
    const dc = D.data_check;
    if (!dc) return el("p", { class: "muted", text: "data_check.json not found" });
    if (typeof dc !== "object" || Array.isArray(dc)) return valueNode(dc);
    const listKeys = Object.keys(dc).filter((k) => Array.isArray(dc[k]) && /problem|warning|error|finding|issue/i.test(k));
    const counters = Object.keys(dc).filter((k) => /^num_(issues|problems|warnings|errors)$/.test(k));
    const rest = {};
    Object.keys(dc).forEach((k) => { if (!listKeys.includes(k) && !counters.includes(k) && !blank(dc[k])) rest[k] = dc[k]; });
    const items = listKeys.flatMap((k) => dc[k]);
    const lists = items.length
      ? [el("b", { text: "Problems found (" + items.length + ")" }),
        el("ul", { class: "findings", id: "data-problems" }, items.map((x) => el("li", { text: findingText(x) })))]
      : [el("p", { id: "data-problems", text: "No problems found in the data." })];
    return el("div", { class: "grid" }, el("div", {}, lists), el("div", {}, valueNode(rest)));
  }

  // ---------------------------------------------------------------- training curves
  function niceTicks(lo, hi, n) {
    const span = hi - lo || Math.abs(hi) || 1;
    const step0 = span / n;
    const mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => span / s <= n) || 10 * mag;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
    return ticks;
  }

  function lineChart(title, epochs, series, opts) {
    const W = 480, H = 240, L = 52, R = 10, T = 12, B = 34;
    const all = series.flatMap((s) => s.values).filter((v) => typeof v === "number" && (!opts.log || v > 0));
    const svg = sv("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title,
      "data-series": series.length });
    if (!all.length || !epochs.length) return el("div", {}, el("h3", { text: title }), el("p", { class: "muted", text: "no data" }));
    const tf = opts.log ? Math.log10 : (v) => v;
    let lo = tf(Math.min(...all)), hi = tf(Math.max(...all));
    if (hi === lo) { // one value (a one-epoch run): a band around it, not one that crosses zero
      const half = opts.log ? 0.5 : Math.abs(hi) * 0.1 || 0.5;
      lo -= half; hi += half;
      if (!opts.log && lo < 0 && Math.min(...all) >= 0) { hi -= lo; lo = 0; } // all 0 (mAP, LR): 0..1
    }
    const pad = (hi - lo) * 0.06; lo -= opts.log ? 0 : pad; hi += pad;
    const x0 = Math.min(...epochs) - 0.5, x1 = Math.max(...epochs) + 0.5;
    const px = (e) => L + ((e - x0) / (x1 - x0)) * (W - L - R);
    const py = (v) => T + (1 - (tf(v) - lo) / (hi - lo)) * (H - T - B);
    const yt = opts.log ? niceTicks(Math.floor(lo), Math.ceil(hi), 5).filter((t) => Number.isInteger(t) && t >= lo && t <= hi).map((t) => Math.pow(10, t))
      : niceTicks(lo, hi, 5);
    yt.forEach((t) => svg.append(sv("line", { class: "gridline", x1: L, x2: W - R, y1: py(t), y2: py(t) }),
      sv("text", { x: L - 6, y: py(t) + 4, "text-anchor": "end", text: fmt(t, 4) })));
    niceTicks(Math.ceil(x0), Math.floor(x1), 10).filter((t) => Number.isInteger(t)).forEach((t) =>
      svg.append(sv("text", { x: px(t), y: H - B + 16, "text-anchor": "middle", text: t })));
    svg.append(sv("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
      sv("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }),
      sv("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", text: "epoch" }));
    (opts.resumes || []).forEach((r) => {
      const x = px(r.epoch + 0.5);
      svg.append(sv("line", { class: "resume", x1: x, x2: x, y1: T, y2: H - B, "data-resume": r.epoch },
        sv("title", { text: r.label })), sv("text", { class: "resume-label", x: x + 3, y: T + 10, text: r.label }));
    });
    series.forEach((s, k) => {
      const color = COLORS[k % COLORS.length];
      const pts = epochs.map((e, i) => [e, s.values[i]]).filter(([, v]) => typeof v === "number" && (!opts.log || v > 0));
      svg.append(sv("polyline", { stroke: color, points: pts.map(([e, v]) => px(e) + "," + py(v)).join(" ") }));
      pts.forEach(([e, v]) => svg.append(sv("circle", { cx: px(e), cy: py(v), r: 2.5, fill: color },
        sv("title", { text: s.name + " · epoch " + e + ": " + fmt(v, 5) }))));
    });
    const legend = el("div", { class: "legend" }, series.map((s, k) => [
      el("i", { style: null, "data-c": k }), s.name]));
    legend.querySelectorAll("i").forEach((i) => { i.style.background = COLORS[Number(i.dataset.c) % COLORS.length]; });
    return el("div", {}, el("h3", { text: title }), legend, svg);
  }

  function curves() {
    const h = D.history || {};
    const epochs = h.epoch || [];
    if (!epochs.length) { section("curves", "Training curves", el("p", { class: "muted", text: "history.csv not found or empty" })); return; }
    const resumes = (D.segments || []).filter((s) => s.start_epoch > 0 || (s.index || 0) > 0)
      .map((s) => ({ epoch: s.start_epoch || 0, label: (s.reason || "resume") + " " + fmt(s.index) }));
    const cols = Object.keys(h);
    const pick = (names) => names.filter((n) => h[n]).map((n) => ({ name: n, values: h[n] }));
    const skip = ["epoch", "segment", "lr", "train_loss", "val_loss", "epoch_time_s", "images_per_s"];
    const metricCols = cols.filter((c) => !skip.includes(c) && /^(val|train)_/.test(c) && !/loss/.test(c));
    const lossCols = cols.filter((c) => /loss/.test(c));
    const lrs = (h.lr || []).filter((v) => typeof v === "number" && v > 0);
    const useLog = lrs.length > 1 && Math.max(...lrs) / Math.min(...lrs) > 20;
    const of = D.overfitting;
    const overfit = of ? el("p", { class: "bad", id: "overfitting", text: "Over-fitting from epoch " + fmt(of.epoch) + ": " +
      of.monitor + " has not improved since epoch " + fmt(of.best_epoch) + " while " + of.train_metric +
      " kept improving (more data, more augmentation or fewer epochs may help)." }) : null;
    const paired = metricCols.slice().sort((a, b) => a.replace(/^(val|train)_/, "").localeCompare(b.replace(/^(val|train)_/, "")) || (a < b ? 1 : -1));
    section("curves", "Training curves", overfit,
      el("p", { class: "muted", text: "Dashed purple lines mark where a resumed segment starts; train_ metrics are scored on a fixed sample of training images without augmentation." }),
      el("div", { class: "grid" },
        lineChart("Loss", epochs, pick(lossCols), { resumes }),
        lineChart("Metrics: train vs validation", epochs, pick(paired), { resumes }),
        lineChart("Learning rate" + (useLog ? " (log scale)" : ""), epochs, pick(["lr"]), { resumes, log: useLog })));
  }

  // ---------------------------------------------------------------- metrics
  function sortable(table) {
    table.classList.add("sortable");
    const head = table.querySelector("tr");
    head.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
      const rows = Array.from(table.querySelectorAll("tr")).slice(1).filter((r) => !r.dataset.fixed);
      const fixed = Array.from(table.querySelectorAll("tr[data-fixed]"));
      const dir = th.dataset.dir === "asc" ? -1 : 1;
      th.dataset.dir = dir === 1 ? "asc" : "desc";
      const key = (r) => { const c = r.children[col]; return c.dataset.v !== undefined ? Number(c.dataset.v) : c.textContent; };
      rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * dir; });
      rows.concat(fixed).forEach((r) => table.append(r));
    }));
    return table;
  }

  function perClassTable() {
    const pc = (D.metrics || {}).per_class;
    if (!pc || !Object.keys(pc).length) return el("p", { class: "muted", text: "No per-class metrics yet." });
    const keys = [];
    Object.values(pc).forEach((r) => Object.keys(r || {}).forEach((k) => { if (!keys.includes(k)) keys.push(k); }));
    const table = el("table", { id: "per-class" },
      el("tr", {}, el("th", { text: "class" }), keys.map((k) => el("th", { class: "num", text: k }))),
      Object.entries(pc).map(([name, r]) => el("tr", {}, el("td", { text: name }), keys.map((k) => {
        const v = (r || {})[k];
        const weak = ["f1", "ap", "recall"].includes(k) && typeof v === "number" && v < 0.5;
        return el("td", { class: "num" + (weak ? " bad" : ""), "data-v": typeof v === "number" ? v : null, text: fmt(v, 3) });
      }))));
    const m = D.metrics;
    const avgs = ["macro_avg", "weighted_avg"].filter((k) => m[k]).map((k) =>
      el("tr", { "data-fixed": "1" }, el("td", { class: "muted", text: k.replace("_", " ") }), keys.map((c) => el("td", { class: "num muted", text: fmt(m[k][c], 3) }))));
    table.append(...avgs);
    const wrap = el("div", { class: "scroll" }, sortable(table));
    const at = D.class_thresholds ? "each class's score threshold (column threshold, chosen on the val split for the best F1)"
      : "score ≥ " + fmt(m.score_threshold !== undefined ? m.score_threshold : D.threshold);
    return el("div", {}, el("p", { class: "muted", text: "Click a column to sort." + (D.task === "detect" ?
      " Precision, recall, TP/FP/misses at " + at + "." : "") }), wrap);
  }

  function confusionTable() {
    const cm = (D.metrics || {}).confusion_matrix;
    if (!Array.isArray(cm) || !cm.length) return el("p", { class: "muted", text: "No confusion matrix yet." });
    const names = cm.map((_, i) => (i < D.classes.length ? D.classes[i] : "background"));
    const table = el("table", { class: "confusion", id: "confusion" },
      el("tr", {}, el("th", { class: "muted", text: "true ↓ / predicted →" }), names.map((n) => el("th", { class: "colh", title: n, text: n }))));
    cm.forEach((row, i) => {
      const total = row.reduce((a, b) => a + (b || 0), 0);
      const tr = el("tr", {}, el("th", { class: "rowh", text: names[i] }));
      row.forEach((n, j) => {
        const frac = total ? (n || 0) / total : 0;
        const td = el("td", { text: n || "", title: "true " + names[i] + " → predicted " + names[j] + ": " + n + " (" + pct(frac) + " of row)" });
        const rgb = i === j ? "37, 99, 235" : "220, 38, 38";
        td.style.background = frac ? `rgba(${rgb}, ${0.12 + 0.88 * frac})` : "";
        if (frac > 0.55) td.style.color = "#fff";
        tr.append(td);
      });
      table.append(tr);
    });
    return el("div", {}, el("p", { class: "muted", text: "Rows are the true class; colour is the share of the row (blue on the diagonal, red for confusions)." }),
      el("div", { class: "scroll" }, table));
  }

  // The TIDE breakdown: what each kind of detection error costs, and where the errors are.
  function errorBreakdown() {
    const e = (D.metrics || {}).errors;
    if (!e || !e.dap50) return null;
    const kinds = Object.keys(e.dap50);
    const table = el("table", { id: "error-breakdown" },
      el("tr", {}, ["error kind", "mAP@.5 if fixed", "mAP if fixed", "count"].map((t) => el("th", { text: t }))),
      kinds.map((k) => el("tr", {}, el("td", { text: k }),
        el("td", { class: "num", text: "+" + fmt(e.dap50[k], 4) }), el("td", { class: "num", text: "+" + fmt((e.dap || {})[k], 4) }),
        el("td", { class: "num", text: fmt((e.counts || {})[k]) }))));
    const pc = e.per_class || {};
    const perClass = el("table", { id: "error-counts" },
      el("tr", {}, el("th", { text: "class" }), kinds.map((k) => el("th", { class: "num", text: k }))),
      Object.entries(pc).map(([name, c]) => el("tr", {}, el("td", { text: name }), kinds.map((k) => el("td", { class: "num", text: fmt(c[k]) })))));
    return [el("h3", { text: "Error breakdown (TIDE)" }),
      el("p", { class: "muted", text: "How much mAP would rise if every error of one kind were fixed (Bolya et al. 2020), over all predictions at IoU .5 (mAP: averaged over IoU .5:.95). Counts per class: predictions by their predicted class, missed boxes by their true class." }),
      el("div", { class: "scroll" }, table), el("div", { class: "scroll" }, perClass)];
  }

  function metricsSection() {
    const kids = [el("h3", { text: "Per class" }), perClassTable(), errorBreakdown(), el("h3", { text: "Confusion matrix" }), confusionTable()];
    if (D.pr_curves) kids.push(el("h3", { text: "Precision-recall curves" }), el("img", { src: D.pr_curves, alt: "PR curves", style: null, id: "pr-curves" }));
    section("metrics", "Metrics", ...kids);
    const img = document.getElementById("pr-curves");
    if (img) img.style.maxWidth = "min(100%, 720px)";
  }

  // ---------------------------------------------------------------- gallery
  const state = { gt: true, pred: true, thr: D.threshold, cls: "all", kind: "all", perClass: !!D.class_thresholds };
  // The score a box of class c needs: its class's own threshold (chosen on val) or the slider's.
  function thrOf(c) {
    const t = state.perClass && D.class_thresholds ? D.class_thresholds[c] : null;
    return typeof t === "number" ? t : state.thr;
  }

  // What is drawn for one image under the current filters: boxes with their kind, and error counts.
  function analyse(item) {
    const keepCls = (c) => state.cls === "all" || c === Number(state.cls);
    const res = { boxes: [], tp: 0, fp: 0, wrong: 0, miss: 0, hasCls: state.cls === "all" };
    (item.gt_boxes || []).forEach((b, i) => {
      const c = item.gt_labels[i];
      if (!keepCls(c)) return;
      res.hasCls = true;
      const hit = item.gt_hit_score ? item.gt_hit_score[i] : null;
      const missed = hit === null || hit === undefined || hit < thrOf(c);
      if (missed) res.miss++;
      res.boxes.push({ b, c, kind: missed ? "gt miss" : "gt", gt: true });
    });
    (item.pred_boxes || []).forEach((b, i) => {
      const c = item.pred_labels[i];
      const s = item.pred_scores ? item.pred_scores[i] : 1;
      if (s < thrOf(c) || !keepCls(c)) return;
      res.hasCls = true;
      const kind = item.pred_match && item.pred_match[i] >= 0 ? "tp" : item.pred_wrong && item.pred_wrong[i] >= 0 ? "wrong" : "fp";
      res[kind]++;
      const both = item.pred_cls_scores ? { ds: item.pred_det_scores[i], cs: item.pred_cls_scores[i] } : {};
      res.boxes.push({ b, c, s, kind, gt: false, ...both });
    });
    return res;
  }

  function classifyState(item) {
    const wrong = item.pred_label !== item.gt_label;
    const hasCls = state.cls === "all" || item.gt_label === Number(state.cls) || item.pred_label === Number(state.cls);
    return { wrong, hasCls };
  }

  // Images `lanner review` flagged (review/label_issues.csv): a filter of the gallery.
  const issuePaths = new Set((D.label_issues || {}).paths || []);
  function visible(item) {
    if (state.kind === "label_issue") return issuePaths.has(item.path) && (D.task !== "detect" ? classifyState(item) : analyse(item)).hasCls;
    if (D.task !== "detect") {
      const s = classifyState(item);
      return s.hasCls && (state.kind === "all" || (state.kind === "misclassified") === s.wrong);
    }
    const a = analyse(item);
    const errors = a.fp + a.wrong + a.miss;
    const byKind = { all: true, errors: errors > 0, fp: a.fp > 0, miss: a.miss > 0, wrong: a.wrong > 0, correct: errors === 0 };
    return a.hasCls && byKind[state.kind];
  }

  function imageSvg(item, cls) {
    const svg = sv("svg", { class: cls, viewBox: `0 0 ${item.width} ${item.height}`, "data-w": item.width, "data-h": item.height });
    if (item.src) svg.append(sv("image", { href: item.src, x: 0, y: 0, width: item.width, height: item.height, preserveAspectRatio: "none" }));
    else svg.append(sv("rect", { class: "placeholder", width: item.width, height: item.height, fill: "#cbd1da" }));
    svg.append(sv("g", { class: "overlay" }));
    return svg;
  }

  function drawBoxes(svg, item, fontDiv) {
    const g = svg.querySelector("g.overlay");
    g.replaceChildren();
    if (D.task !== "detect") return 0;
    const fs = Math.max(item.width, item.height) / (fontDiv || 28);
    let n = 0;
    analyse(item).boxes.forEach((o) => {
      if ((o.gt && !state.gt) || (!o.gt && !state.pred)) return;
      const [x1, y1, x2, y2] = o.b;
      const label = className(o.c) + (o.gt ? (o.kind === "gt miss" ? " (missed)" : "") : " " + fmt(o.s, 2))
        + (o.cs !== undefined ? " = det " + fmt(o.ds, 2) + " × cls " + fmt(o.cs, 2) : "");
      g.append(sv("rect", { class: "box " + o.kind, x: x1, y: y1, width: Math.max(0, x2 - x1), height: Math.max(0, y2 - y1),
        "data-kind": o.kind, "data-class": o.c }, sv("title", { text: (o.gt ? "ground truth: " : o.kind + ": ") + label })));
      g.append(sv("text", { class: "boxlabel", x: x1 + 2, y: o.gt ? y2 - fs * 0.3 : y1 + fs, "font-size": fs, text: label }));
      n++;
    });
    return n;
  }

  function caption(item) {
    const cap = el("div", { class: "cap" }, el("div", { class: "name", title: item.path, text: item.name }));
    if (D.task !== "detect") {
      const ok = item.pred_label === item.gt_label;
      cap.append(el("div", { class: "gt-line" }, el("span", { class: "tag gt", text: "true" }), " " + className(item.gt_label)),
        el("div", { class: "pred-line" }, el("span", { class: "tag " + (ok ? "tp" : "fp"), text: ok ? "pred" : "wrong" }),
          " " + className(item.pred_label) + " (" + pct(item.score) + ")"),
        el("div", { class: "pred-line muted" }, "top-k: " + (item.topk || []).slice(0, 3).map(([c, s]) => className(c) + " " + pct(s)).join(", ")));
    } else {
      cap.append(el("div", { class: "counts" }));
    }
    return cap;
  }

  function updateCounts(tile, item) {
    const box = tile.querySelector(".counts");
    if (!box) return;
    const a = analyse(item);
    const tags = [["tp", a.tp, "TP"], ["fp", a.fp, "FP"], ["wrong", a.wrong, "wrong class"], ["miss", a.miss, "missed"]];
    box.replaceChildren(...tags.map(([k, n, label]) => el("span", { class: "tag " + (n || k === "tp" ? k : "ok"), text: n + " " + label })));
    tile.classList.toggle("error", a.fp + a.wrong + a.miss > 0);
  }

  function gallery() {
    const G = D.gallery;
    if (!G || !G.images.length) { section("gallery", "Gallery", el("p", { class: "muted", text: "No eval/predictions.json yet: run lanner eval to fill the gallery." })); return; }
    const det = D.task === "detect";
    const classOpts = [el("option", { value: "all", text: "all classes" }), D.classes.map((c, i) => el("option", { value: i, text: c }))];
    const kinds = det ? [["all", "all images"], ["errors", "any error"], ["fp", "false positives"], ["miss", "misses"], ["wrong", "wrong class"], ["correct", "no errors"]]
      : [["all", "all images"], ["misclassified", "misclassified"], ["correct", "correct"]];
    if (issuePaths.size) kinds.push(["label_issue", "likely label errors (review)"]);
    const thrLabel = el("span", { id: "thr-value", text: fmt(state.thr, 2) });
    const controls = el("div", { class: "controls" },
      el("label", {}, el("input", { type: "checkbox", id: "toggle-gt", checked: "" }), "ground truth"),
      el("label", {}, el("input", { type: "checkbox", id: "toggle-pred", checked: "" }), "predictions"),
      det && D.class_thresholds ? el("label", { title: "each class's score threshold, chosen on the val split" },
        el("input", { type: "checkbox", id: "per-class-thr", checked: "" }), "per-class thresholds") : null,
      det ? el("label", {}, "score ≥", el("input", { type: "range", id: "threshold", min: 0, max: 1, step: 0.01, value: state.thr }), thrLabel) : null,
      el("label", {}, "class", el("select", { id: "filter-class" }, classOpts)),
      el("label", {}, "show", el("select", { id: "filter-kind" }, kinds.map(([v, t]) => el("option", { value: v, text: t })))),
      el("span", { id: "gallery-count" }));
    const worst = det ? "most errors (false positives + wrong class + misses at score ≥ " + fmt(D.threshold, 2) + ") first, confident mistakes first among equals"
      : "misclassified first (most confident mistakes first), then correct ones from least to most confident";
    const note = el("p", { class: "muted", text: `Sorted worst first: ${worst}. ${G.shown} of ${G.total} evaluated images embedded. Click an image to zoom.` });
    const legend = det ? el("p", { class: "legend" }, [["gt", "ground truth"], ["tp", "correct"], ["fp", "false positive"], ["wrong", "wrong class"], ["miss", "missed ground truth"]]
      .map(([k, t]) => el("span", { class: "tag " + k, text: t }))) : null;
    const grid = el("div", { class: "gallery", id: "gallery-grid" });
    const tiles = G.images.map((item, i) => {
      const svg = imageSvg(item, "thumb");
      const tile = el("div", { class: "tile", "data-index": i }, svg, caption(item));
      svg.addEventListener("click", () => openModal(item));
      grid.append(tile);
      return { tile, svg, item };
    });
    section("gallery", "Gallery", note, legend, controls, grid);

    function redraw() {
      let shown = 0, boxes = 0;
      tiles.forEach(({ tile, svg, item }) => {
        const on = visible(item);
        tile.hidden = !on;
        const n = on ? drawBoxes(svg, item) : 0;
        tile.dataset.boxes = n;
        if (on) { shown++; boxes += n; updateCounts(tile, item); }
        tile.querySelectorAll(".gt-line").forEach((x) => { x.hidden = !state.gt; });
        tile.querySelectorAll(".pred-line").forEach((x) => { x.hidden = !state.pred; });
      });
      grid.dataset.visible = shown;
      grid.dataset.boxes = boxes;
      document.getElementById("gallery-count").textContent = `showing ${shown} of ${tiles.length} images` + (det ? ` · ${boxes} boxes drawn` : "");
    }
    const on = (id, ev, fn) => document.getElementById(id).addEventListener(ev, (e) => { fn(e.target); redraw(); });
    on("toggle-gt", "change", (t) => { state.gt = t.checked; });
    on("toggle-pred", "change", (t) => { state.pred = t.checked; });
    on("filter-class", "change", (t) => { state.cls = t.value; });
    on("filter-kind", "change", (t) => { state.kind = t.value; });
    if (det) on("threshold", "input", (t) => {
      state.thr = Number(t.value); thrLabel.textContent = fmt(state.thr, 2);
      state.perClass = false;
      const box = document.getElementById("per-class-thr");
      if (box) box.checked = false;
    });
    if (det && D.class_thresholds) on("per-class-thr", "change", (t) => { state.perClass = t.checked; });
    redraw();
  }

  // ---------------------------------------------------------------- likely label errors (lanner review)
  // The label as given (dashed, grey) and the model's suggestion (solid, purple) on one image.
  function drawIssue(svg, item, fontDiv) {
    const g = svg.querySelector("g.overlay");
    g.replaceChildren();
    const fs = Math.max(item.width, item.height) / (fontDiv || 28);
    const boxes = [];
    if (item.box && item.kind !== "missing_box") boxes.push([item.box, "gt", "given: " + item.given]);
    if (item.sbox) boxes.push([item.sbox, "suggest", "suggested: " + item.suggested]);
    boxes.forEach(([b, cls, label]) => {
      const [x1, y1, x2, y2] = b;
      g.append(sv("rect", { class: "box " + cls, x: x1, y: y1, width: Math.max(0, x2 - x1), height: Math.max(0, y2 - y1),
        "data-kind": cls }, sv("title", { text: label })));
      g.append(sv("text", { class: "boxlabel", x: x1 + 2, y: cls === "gt" ? y2 - fs * 0.3 : y1 + fs, "font-size": fs, text: label }));
    });
  }

  function issueCaption(item) {
    const probs = typeof item.given_prob === "number" ? [" (" + pct(item.given_prob) + ")", " (" + pct(item.suggested_prob) + ")"] : ["", ""];
    const suggestion = item.kind === "spurious_box" ? "remove the box? (no model predicts it)" : item.suggested + probs[1];
    return el("div", { class: "cap" }, el("div", { class: "name", title: item.path, text: item.name }),
      el("div", {}, el("span", { class: "tag wrong", text: item.kind }), " score " + fmt(item.score, 3) + (typeof item.iou === "number" ? " · IoU " + fmt(item.iou, 2) : "")),
      el("div", { class: "gt-line" }, el("span", { class: "tag gt", text: "given" }), " " + (item.given ? item.given + probs[0] : "(no box)")),
      el("div", { class: "pred-line" }, el("span", { class: "tag suggest", text: "suggested" }), " " + suggestion));
  }

  function labelIssues() {
    const L = D.label_issues;
    if (!L) return;
    const R = L.review || {};
    const how = R.folds ? `${R.folds}-fold out-of-sample predictions (models that never saw the image)`
      : "the run's own model (--folds 0: less reliable, it may have trained on these images)";
    const from = R.split ? `lanner review of split ${R.split} (${fmt(R.images)} images) with ${how}: ` : "";
    const exported = R.export && R.export.images ? ` Exported ${fmt(R.export.images)} flagged images with the suggestions marked to ${R.export.out} (${R.export.format}).` : "";
    const note = el("p", { class: "muted", text: from +
      `${L.total} likely label errors in review/label_issues.csv, most likely first; ${L.shown} shown. The label as given is dashed, the suggestion solid. To fix them in an annotation tool: lanner review RUN --export labelme|coco OUT (the flagged images, their labels as they are, each suggestion marked suggested:<class>).` + exported });
    const kinds = ["all", ...new Set(L.items.map((x) => x.kind))];
    const select = el("select", { id: "issue-kind" }, kinds.map((k) => el("option", { value: k, text: k === "all" ? "all kinds" : k })));
    const grid = el("div", { class: "gallery", id: "issues-grid" });
    const tiles = L.items.map((item) => {
      const svg = imageSvg(item, "thumb");
      drawIssue(svg, item);
      const tile = el("div", { class: "tile error", "data-kind": item.kind }, svg, issueCaption(item));
      svg.addEventListener("click", () => openModal(item, drawIssue));
      grid.append(tile);
      return { tile, item };
    });
    const count = el("span", { id: "issues-count" });
    const redraw = () => {
      let shown = 0;
      tiles.forEach(({ tile, item }) => { tile.hidden = select.value !== "all" && item.kind !== select.value; shown += !tile.hidden; });
      count.textContent = `showing ${shown} of ${tiles.length}`;
    };
    select.addEventListener("change", redraw);
    section("label-issues", "Likely label errors", note, el("div", { class: "controls" }, el("label", {}, "show", select), count), grid);
    redraw();
  }

  // ---------------------------------------------------------------- zoomable modal
  const modal = document.getElementById("modal");
  function openModal(item, draw) {
    const svg = imageSvg(item, "zoom");
    (draw || drawBoxes)(svg, item, 90);
    document.getElementById("modal-title").textContent = item.path + " (" + item.width + "×" + item.height + ")";
    document.getElementById("modal-body").replaceChildren(svg);
    modal.hidden = false;
    zoomable(svg, item.width, item.height);
  }
  function closeModal() { modal.hidden = true; document.getElementById("modal-body").replaceChildren(); }
  document.getElementById("modal-close").addEventListener("click", closeModal);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeModal(); });

  function zoomable(svg, w, h) {
    let vb = [0, 0, w, h];
    const set = () => svg.setAttribute("viewBox", vb.join(" "));
    const toSvg = (cx, cy) => { const r = svg.getBoundingClientRect(), s = Math.max(vb[2] / r.width, vb[3] / r.height);
      return [vb[0] + vb[2] / 2 + (cx - r.left - r.width / 2) * s, vb[1] + vb[3] / 2 + (cy - r.top - r.height / 2) * s, s]; };
    const zoom = (f, cx, cy) => { const [x, y] = toSvg(cx, cy); vb = [x - (x - vb[0]) * f, y - (y - vb[1]) * f, vb[2] * f, vb[3] * f]; set(); };
    svg.addEventListener("wheel", (e) => { e.preventDefault(); zoom(e.deltaY > 0 ? 1.15 : 1 / 1.15, e.clientX, e.clientY); }, { passive: false });
    svg.addEventListener("dblclick", () => { vb = [0, 0, w, h]; set(); });
    const pts = new Map();
    let pinch = 0;
    svg.addEventListener("pointerdown", (e) => { svg.setPointerCapture(e.pointerId); pts.set(e.pointerId, [e.clientX, e.clientY]); });
    svg.addEventListener("pointermove", (e) => {
      const prev = pts.get(e.pointerId);
      if (!prev) return;
      pts.set(e.pointerId, [e.clientX, e.clientY]);
      if (pts.size === 2) {
        const [a, b] = Array.from(pts.values());
        const d = Math.hypot(a[0] - b[0], a[1] - b[1]);
        if (pinch) zoom(pinch / d, (a[0] + b[0]) / 2, (a[1] + b[1]) / 2);
        pinch = d;
      } else {
        const s = toSvg(0, 0)[2];
        vb[0] -= (e.clientX - prev[0]) * s; vb[1] -= (e.clientY - prev[1]) * s; set();
      }
    });
    const up = (e) => { pts.delete(e.pointerId); pinch = 0; };
    svg.addEventListener("pointerup", up);
    svg.addEventListener("pointercancel", up);
  }

  // ---------------------------------------------------------------- go
  header();
  summary();
  curves();
  metricsSection();
  gallery();
  labelIssues();
  document.body.dataset.ready = "1";
})();
