// The deepskeptic page: the served runs, their comparisons and a "try it" panel per run.
// Plain DOM, no libraries, nothing fetched but this server's API. Every string that comes from
// the server or the user is put in the page as text (textContent), never parsed as HTML.
"use strict";

const TOKEN_KEY = "deepskeptic-token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";

// ------------------------------------------------------------------ small helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);   // CSSOM: allowed by the page's CSP
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function fmt(value) {
  if (typeof value !== "number") return value === null ? "null" : String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toPrecision(4);
}

class ApiError extends Error {}

// fetch with the token; a JSON {"error": ...} or any failure becomes an ApiError in words
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (e) {
    throw new ApiError("the server cannot be reached (" + e.message + ")");
  }
  if (!response.ok) {
    let message = "HTTP " + response.status;
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") message = body.error;
    } catch (e) { /* not JSON */ }
    if (response.status === 401) showAuth(message);
    throw new ApiError(message);
  }
  return response;
}

async function postJSON(path, body) {
  const response = await api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                     body: JSON.stringify(body) });
  return response.json();
}

async function postFiles(path, files, fields = {}) {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  for (const [key, value] of Object.entries(fields)) form.append(key, String(value));
  const response = await api(path, { method: "POST", body: form });
  return response.json();
}

function showError(node, error) {
  node.textContent = error instanceof Error ? error.message : String(error);
}

// a button that is disabled while its action runs; errors go to the panel's error line
function action(label, errorNode, fn) {
  const button = el("button", { type: "button" }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    errorNode.textContent = "";
    try { await fn(); } catch (e) { showError(errorNode, e); } finally { button.disabled = false; }
  });
  return button;
}

function bars(rows) {  // rows: [{label, value in [0, 1]}]
  return el("div", { class: "bars" }, rows.map(r => el("div", { class: "bar" },
    el("span", { class: "label", title: r.label }, r.label),
    el("span", { class: "track" }, el("span", { class: "fill", style: { width: `${Math.max(0, Math.min(1, r.value)) * 100}%` } })),
    el("span", { class: "value" }, r.value.toFixed(3)))));
}

function fileInput(accept, multiple, onFiles) {
  const input = el("input", { type: "file", accept, multiple });
  input.addEventListener("change", () => { if (input.files.length) onFiles([...input.files]); });
  const zone = el("div", { class: "drop" }, "drop a file here, or ", input);
  zone.addEventListener("dragover", e => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", e => {
    e.preventDefault(); zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFiles([...e.dataTransfer.files]);
  });
  return zone;
}

function pngURL(base64) { return "data:image/png;base64," + base64; }

// a report link: a plain link without a token; with one, fetched with it and opened as a blob
function reportLink(url, label) {
  if (!url) return el("span", { class: "muted" }, "no report");
  if (!token) return el("a", { href: url, target: "_blank", rel: "noopener" }, label);
  const error = el("span", { class: "error" });
  const button = el("button", { type: "button", class: "link" }, label);
  button.addEventListener("click", async () => {
    try {
      const blob = await (await api(url)).blob();
      window.open(URL.createObjectURL(new Blob([blob], { type: "text/html" })), "_blank", "noopener");
    } catch (e) { showError(error, e); }
  });
  return el("span", {}, button, " ", error);
}

// ------------------------------------------------------------------ charts (SVG)

function lineChart(series, options = {}) {  // series: [{name, color, points: [[x, y], ...], band?}]
  const W = 600, H = 180, pad = 30;
  const all = series.flatMap(s => s.points.concat(s.band ? s.band.flatMap(b => [[b[0], b[1]], [b[0], b[2]]]) : []))
                    .filter(p => Number.isFinite(p[1]));
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  if (!all.length) return svg;
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const X = x => pad + (x - x0) / (x1 - x0) * (W - 2 * pad);
  const Y = y => H - pad / 2 - (y - y0) / (y1 - y0) * (H - 1.5 * pad);
  for (const s of series) {
    if (s.band && s.band.length) {
      const upper = s.band.map(b => `${X(b[0])},${Y(b[2])}`), lower = s.band.slice().reverse().map(b => `${X(b[0])},${Y(b[1])}`);
      svg.append(svgEl("polygon", { points: upper.concat(lower).join(" "), fill: s.color, "fill-opacity": s.bandOpacity || 0.15 }));
    }
    const pts = s.points.filter(p => Number.isFinite(p[1])).map(p => `${X(p[0])},${Y(p[1])}`).join(" ");
    if (pts) svg.append(svgEl("polyline", Object.assign({ points: pts, fill: "none", stroke: s.color, "stroke-width": 2 },
                                                        s.cls ? { class: s.cls } : {})));
  }
  const label = (x, y, text, anchor) => { const t = svgEl("text", { x, y, "text-anchor": anchor || "start" }); t.textContent = text; svg.append(t); };
  label(2, Y(y1) + 4, fmt(y1)); label(2, Y(y0), fmt(y0));
  if (options.xLabel) label(W - 2, H - 2, options.xLabel, "end");
  return svg;
}

function legend(series) {
  return el("div", { class: "legend" }, series.map(s => el("span", { style: { color: s.color } }, "— " + s.name)));
}

// ------------------------------------------------------------------ LSTM gates (heat maps)

// What each recorded quantity is and the range its colours span ("cell" is unbounded: its own).
const GATE_INFO = {
  hidden: ["unit output h", -1, 1], forget: ["forget gate", 0, 1], input: ["input gate", 0, 1],
  candidate: ["candidate values", -1, 1], output: ["output gate", 0, 1], cell: ["cell state c", null, null],
};
const GATE_ORDER = ["forget", "input", "candidate", "output", "cell", "hidden"];
const SHOWN_CHAR = { "\n": "↵", "\t": "→", " ": "·" };

// blue (low) - light grey - red (high), as the reports' coolwarm maps
function heatColor(t) {
  if (!Number.isFinite(t)) return "#ffffff";
  t = Math.max(0, Math.min(1, t));
  const [a, b, u] = t < 0.5 ? [[59, 76, 192], [221, 221, 221], t * 2] : [[221, 221, 221], [180, 4, 38], t * 2 - 1];
  return `rgb(${a.map((v, i) => Math.round(v + (b[i] - v) * u)).join(",")})`;
}

// One heat map: a row per unit, a column per time step. values: (T, units); steps: a label per
// column (characters or times; shown as text, never parsed); every: label every k-th column.
function heatMap(name, values, units, steps, every) {
  const [title, low0, high0] = GATE_INFO[name] || [name, null, null];
  let low = low0, high = high0;
  if (low === null) {
    const flat = values.flat().filter(Number.isFinite);
    const m = Math.max(1e-6, ...flat.map(Math.abs));
    low = -m; high = m;
  }
  const C = 13, left = 52, top = 16, T = values.length;
  const W = left + T * C + 4, H = top + units.length * C + 2;
  const svg = svgEl("svg", { class: "heat", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                             "data-gate": name, "aria-label": `${title} over ${T} steps` });
  const text = (x, y, content, attrs) => {
    const t = svgEl("text", Object.assign({ x, y }, attrs || {}));
    t.textContent = content;                                    // text, never markup
    svg.append(t);
  };
  units.forEach((u, r) => text(left - 4, top + r * C + C - 3, `unit ${u}`, { "text-anchor": "end" }));
  for (let j = 0; j < T; j++) {
    if (j % every === 0) text(left + j * C + C / 2, top - 4, steps[j] ?? "", { "text-anchor": every > 1 ? "start" : "middle" });
    units.forEach((u, r) => {
      const v = values[j][r];
      const rect = svgEl("rect", { x: left + j * C, y: top + r * C, width: C - 1, height: C - 1,
                                   fill: heatColor(v === null ? NaN : (v - low) / (high - low)) });
      const tip = svgEl("title", {});
      tip.textContent = `${title}, unit ${u}, ${steps[j] ?? j}: ${v === null ? "null" : fmt(v)}`;
      rect.append(tip);
      svg.append(rect);
    });
  }
  return el("figure", { class: "gate" }, el("div", { class: "scroll" }, svg),
            el("figcaption", {}, `${title} (${fmt(low)} blue … ${fmt(high)} red)`));
}

// The gates an explain response gives: text/textgen {text, cells, layer, hidden, forget, ...} or
// forecast {units, layer, time, forget, input, candidate, output, cell, hidden}.
function gateMaps(body) {
  const units = body.cells || body.units || [];
  let steps, every = 1, about;
  if (typeof body.text === "string") {
    steps = [...body.text].map(ch => SHOWN_CHAR[ch] ?? ch);
    about = `LSTM layer ${body.layer + 1}, units ${units.join(", ")}, per character` +
            (body.truncated ? " (the text was cut to its first characters)" : "") +
            (body.unknown ? `; ${body.unknown} character(s) not in the vocabulary` : "");
  } else {
    steps = body.time || [];
    const longest = Math.max(1, ...steps.map(t => String(t).length));
    every = Math.max(1, Math.ceil(steps.length / 8), Math.ceil((longest * 5.5 + 6) / 13));  // labels must not overlap
    about = `LSTM layer ${body.layer + 1}, units ${units.join(", ")}, over the last ${steps.length} steps of ` +
            (typeof body.series === "string" ? `the run's series ${body.series}` : "the run's series");
  }
  const names = GATE_ORDER.filter(k => Array.isArray(body[k]));
  return el("div", { class: "gates" }, el("p", { class: "muted" }, about),
            names.map(k => heatMap(k, body[k], units, steps, every)));
}

async function explainGates(m, body) {
  return gateMaps(await postJSON(`/v1/models/${encodeURIComponent(m.name)}/explain`, body));
}

// ------------------------------------------------------------------ the try-it panels, per task

const PANELS = {
  image(m, out, error) {
    const pictures = el("div", { class: "pictures" }), result = el("div", { class: "result" });
    const explain = m.commands.includes("explain");
    out.append(fileInput("image/*", false, async files => {
      error.textContent = ""; result.textContent = ""; pictures.textContent = "";
      const preview = el("img", { class: "small", alt: "your image", src: URL.createObjectURL(files[0]) });
      pictures.append(el("figure", {}, preview, el("figcaption", {}, files[0].name)));
      try {
        const body = await postFiles(`/v1/models/${encodeURIComponent(m.name)}/predict`, files, { top_k: 5 });
        const r = body.results[0];
        result.append(el("p", {}, "predicted: ", el("strong", { class: "predicted" }, r.top[0].class)),
                      bars(r.top.map(t => ({ label: t.class, value: t.probability }))));
      } catch (e) { showError(error, e); return; }
      if (explain) {
        try {
          const cam = await postFiles(`/v1/models/${encodeURIComponent(m.name)}/explain`, files);
          pictures.append(el("figure", {}, el("img", { alt: "Grad-CAM", src: pngURL(cam.results[0].gradcam) }),
                             el("figcaption", {}, "Grad-CAM of the predicted class")));
        } catch (e) { pictures.append(el("p", { class: "muted" }, "Grad-CAM: " + e.message)); }
      }
    }), pictures, result);
  },

  text(m, out, error) {
    const box = el("textarea", { rows: 3, placeholder: "type a text to classify" });
    const result = el("div", { class: "result" });
    out.append(box, el("div", { class: "row" }, action("Classify", error, async () => {
      result.textContent = "";
      const body = await postJSON(`/v1/models/${encodeURIComponent(m.name)}/predict`, { texts: [box.value], top_k: 5 });
      const r = body.results[0];
      result.append(el("p", {}, "predicted: ", el("strong", { class: "predicted" }, r.top[0].class)),
                    bars(r.top.map(t => ({ label: t.class, value: t.probability }))));
      if (m.gates) {
        try { result.append(await explainGates(m, { text: box.value })); }
        catch (e) { result.append(el("p", { class: "muted" }, "gates: " + e.message)); }
      }
    })), result);
  },

  textgen(m, out, error) {
    const prime = el("input", { type: "text", placeholder: "text to start from (optional)" });
    const temperature = el("input", { type: "range", min: 0, max: 2, step: 0.05, value: 0.8 });
    const shown = el("span", {}, "0.80");
    temperature.addEventListener("input", () => { shown.textContent = Number(temperature.value).toFixed(2); });
    const length = el("input", { type: "number", min: 1, max: 5000, value: 300 });
    const seed = el("input", { type: "number", min: 0, value: 0 });
    const text = el("pre", { class: "generated result" });
    const gates = el("div", { class: "result" });
    out.append(prime, el("div", { class: "row" }, el("label", {}, "temperature ", temperature, " ", shown),
                         el("label", {}, "length ", length), el("label", {}, "seed ", seed)),
      el("div", { class: "row" }, action("Generate", error, async () => {
        text.textContent = "";
        const response = await api(`/v1/models/${encodeURIComponent(m.name)}/generate`, {
          method: "POST", headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
          body: JSON.stringify({ prime: prime.value, temperature: Number(temperature.value), length: Number(length.value),
                                 seed: Number(seed.value), stream: true }) });
        await readEvents(response, (kind, data) => {
          if (kind === "sample") text.textContent += (data.index ? "\n----\n" : "") + data.prime;
          else if (kind === "text") text.textContent += data;
          else if (kind === "error") throw new ApiError(data.error);
        });
      }), m.gates ? action("Show LSTM gates", error, async () => {
        gates.textContent = "";
        const shown = text.textContent || prime.value;
        if (!shown) throw new ApiError("generate a text (or type one to start from) to see the gates on it");
        gates.append(await explainGates(m, { text: shown }));
      }) : null), text, gates);
  },

  speech(m, out, error) {
    const result = el("div", { class: "result" });
    out.append(fileInput("audio/*,.wav,.flac,.ogg", false, async files => {
      error.textContent = ""; result.textContent = "";
      try {
        const body = await postFiles(`/v1/models/${encodeURIComponent(m.name)}/predict`, files, { top_k: 5 });
        const r = body.results[0];
        result.append(el("p", {}, "heard: ", el("strong", { class: "predicted" }, r.transcript || "(nothing)"),
                         ` (confidence ${fmt(r.confidence)})`));
        if (r.top) result.append(bars(r.top.map(t => ({ label: t.word, value: t.probability }))));
      } catch (e) { showError(error, e); }
    }), result);
  },

  forecast(m, out, error) {
    const result = el("div", { class: "result" });
    const values = el("textarea", { rows: 2, placeholder: "numbers, oldest first (or upload a CSV like the run's data)" });
    const gates = el("div", { class: "result" });
    // body: a predict response; its history (the series as the run's reader read it) comes first
    const show = (body, typed) => {
      result.textContent = "";
      const rows = body.results, past = body.history || { values: typed || [], time: [] };
      const history = past.values, n = history.length;
      const first = past.time && past.time.length ? `from ${past.time[0]} ` : "";
      const series = [
        { name: past.points > n ? `history (the last ${n} of ${past.points} points)` : "history", color: "#5b6475",
          points: history.map((v, i) => [i, v]), cls: "history" },
        { name: "forecast (80% and 95% intervals)", color: "#2f6fdb", points: rows.map((r, i) => [n + i, r.forecast]),
          band: rows.map((r, i) => [n + i, r.lower_95, r.upper_95]), bandOpacity: 0.12 },
        { name: "", color: "#2f6fdb", points: [], band: rows.map((r, i) => [n + i, r.lower_80, r.upper_80]), bandOpacity: 0.2 },
      ];
      series[1].cls = "forecast";
      result.append(lineChart(series, { xLabel: first + (rows.length ? `to ${rows[rows.length - 1].time}` : "") }),
                    legend(series.slice(0, 2)),
        el("table", {}, el("tr", {}, ["time", "forecast", "80%", "95%"].map(h => el("th", {}, h))),
          rows.map(r => el("tr", {}, el("td", {}, r.time), el("td", { class: "num" }, fmt(r.forecast)),
            el("td", { class: "num" }, `${fmt(r.lower_80)} … ${fmt(r.upper_80)}`),
            el("td", { class: "num" }, `${fmt(r.lower_95)} … ${fmt(r.upper_95)}`)))));
    };
    out.append(fileInput(".csv,text/csv", false, async files => {
      error.textContent = "";
      try { show(await postFiles(`/v1/models/${encodeURIComponent(m.name)}/predict`, files)); }
      catch (e) { showError(error, e); }
    }), values, el("div", { class: "row" }, action("Forecast", error, async () => {
      const numbers = values.value.split(/[\s,;]+/).filter(s => s.length).map(s => (s === "null" || s === "NaN") ? null : Number(s));
      if (numbers.some(v => v !== null && !Number.isFinite(v))) throw new ApiError("give numbers separated by spaces or commas");
      show(await postJSON(`/v1/models/${encodeURIComponent(m.name)}/predict`, { series: numbers }), numbers);
    }), m.gates ? action("Show LSTM gates", error, async () => {
      gates.textContent = "";
      gates.append(await explainGates(m, {}));
    }) : null), result, gates);
  },

  gan(m, out, error) {
    const seed = el("input", { type: "number", min: 0, value: 0 });
    const n = el("input", { type: "number", min: 1, max: 64, value: 16 });
    const pictures = el("div", { class: "pictures result" });
    const draw = async () => {
      const response = await api(`/v1/models/${encodeURIComponent(m.name)}/generate`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ n: Number(n.value), seed: Number(seed.value), format: "grid" }) });
      const url = URL.createObjectURL(await response.blob());
      pictures.textContent = "";
      pictures.append(el("figure", {}, el("img", { alt: "generated images", src: url }),
                         el("figcaption", {}, `seed ${seed.value}`)));
    };
    out.append(el("div", { class: "row" }, el("label", {}, "seed ", seed), el("label", {}, "images ", n),
      action("Generate", error, draw),
      action("New seed", error, async () => { seed.value = Math.floor(Math.random() * 1e6); await draw(); })), pictures);
  },

  cyclegan(m, out, error) {
    const [a, b] = m.domains && m.domains.length === 2 ? m.domains : ["A", "B"];
    const direction = el("select", {}, el("option", { value: "a2b" }, `${a} → ${b}`), el("option", { value: "b2a" }, `${b} → ${a}`));
    const pictures = el("div", { class: "pictures result" });
    out.append(el("div", { class: "row" }, el("label", {}, "direction ", direction)),
      fileInput("image/*", false, async files => {
        error.textContent = ""; pictures.textContent = "";
        try {
          const body = await postFiles(`/v1/models/${encodeURIComponent(m.name)}/translate`, files, { direction: direction.value });
          pictures.append(el("figure", {}, el("img", { alt: "input", src: URL.createObjectURL(files[0]) }), el("figcaption", {}, body.from)),
                          el("figure", {}, el("img", { alt: "translation", src: pngURL(body.results[0].image) }), el("figcaption", {}, body.to)));
        } catch (e) { showError(error, e); }
      }), pictures);
  },
};

// server-sent events from a fetch response: onEvent(kind, data) per event
async function readEvents(response, onEvent) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
      let kind = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      onEvent(kind, data ? JSON.parse(data) : null);
    }
  }
}

// ------------------------------------------------------------------ runs and comparisons

function metricsTable(metrics) {
  const rows = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number" || v === null);
  return el("table", {}, rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, fmt(v)))));
}

function runCard(m) {
  const error = el("p", { class: "error", role: "alert" });
  const panel = el("div", { class: "panel", "data-model": m.name, "data-task": m.task });
  const card = el("article", { class: "card", id: "run-" + m.name },
    el("h3", {}, m.name),
    el("div", { class: "meta" }, `${m.task} · ${m.model} · data ${m.data} · seed ${m.seed}`),
    el("details", {}, el("summary", {}, "metrics"), metricsTable(m.metrics)),
    el("div", { class: "row" }, reportLink(m.report, "report")), panel);
  const build = PANELS[m.task];
  const usable = m.commands.includes("predict") || m.commands.includes("generate") || m.commands.includes("translate");
  if (build && usable) {
    panel.append(el("h4", {}, "try it"));
    const out = el("div", {});
    panel.append(out, error);
    build(m, out, error);
  } else {
    panel.append(el("p", { class: "muted" }, `nothing to try for a ${m.task} run here; it has: ${m.commands.join(", ") || "no commands"}`));
  }
  return card;
}

function comparisonCard(c) {
  const metric = c.metric;
  const rows = Object.entries(c.models || {}).map(([name, s]) => el("tr", {},
    el("td", {}, name), el("td", {}, s.role || ""),
    el("td", { class: "num" }, `${fmt(s[metric + "_mean"])} ± ${fmt(s[metric + "_std"])}`),
    el("td", { class: "num" }, fmt(s.params)), el("td", { class: "num" }, fmt(s.train_seconds_mean))));
  return el("article", { class: "card" },
    el("h3", {}, `comparison ${c.id}`),
    el("div", { class: "meta" }, `${c.task} · ${metric} (${c.higher_is_better ? "higher" : "lower"} is better) · ${c.seeds} seed(s)`),
    el("ul", { class: "verdicts" }, (c.verdicts || []).map(v => el("li", {}, v))),
    el("table", {}, el("tr", {}, ["model", "role", metric, "params", "seconds"].map(h => el("th", {}, h))), rows),
    el("div", { class: "row" }, reportLink(c.report, "comparison report")));
}

// ------------------------------------------------------------------ runs in progress (--watch)

const COLORS = ["#2f6fdb", "#c2410c", "#067647", "#7c3aed", "#b42318", "#0e7490"];

function watchCard(run) {
  const keys = [...new Set(run.history.flatMap(h => Object.keys(h)))]
    .filter(k => k !== "epoch" && !k.endsWith("seconds") && !k.endsWith("per_second") && k !== "lr");
  const shown = keys.filter(k => k.includes("loss")).concat(keys.filter(k => !k.includes("loss"))).slice(0, 4);
  const series = shown.map((k, i) => ({ name: k, color: COLORS[i % COLORS.length],
                                        points: run.history.map((h, j) => [h.epoch ?? j + 1, h[k]]) }));
  const planned = run.epochs_planned ? ` of ${run.epochs_planned}` : "";
  return el("article", { class: "card" }, el("h3", {}, run.path),
    el("div", { class: "meta" }, `${run.task} · ${run.model} · data ${run.data} · `,
       el("span", { class: run.complete ? "done" : "training" }, run.complete ? "finished" : "training"),
       ` · ${run.history.length}${planned} epoch(s)`),
    run.history.length ? [lineChart(series, { xLabel: "epoch" }), legend(series)] : el("p", { class: "muted" }, "no epoch finished yet"));
}

async function refreshWatch() {
  const list = document.getElementById("watch-list");
  try {
    const body = await (await api("/v1/watch")).json();
    list.replaceChildren(el("div", { class: "grid" }, body.runs.map(watchCard)));
    if (!body.runs.length) list.replaceChildren(el("p", { class: "muted" }, `no runs in ${body.folder} yet`));
  } catch (e) {
    list.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

// ------------------------------------------------------------------ start

function showAuth(message) {
  const section = document.getElementById("auth");
  section.hidden = false;
  const status = document.getElementById("status");
  status.textContent = message;
}

async function start() {
  const status = document.getElementById("status"), pageError = document.getElementById("page-error");
  pageError.hidden = true;
  let health;
  try {
    health = await (await api("/health")).json();
  } catch (e) { status.textContent = ""; pageError.hidden = false; showError(pageError, e); return; }
  if (health.token_required && !token) { showAuth("this server needs a token"); return; }
  try {
    const [models, comparisons] = await Promise.all([
      api("/v1/models").then(r => r.json()), api("/v1/comparisons").then(r => r.json())]);
    document.getElementById("auth").hidden = true;
    status.textContent = `${models.models.length} run(s) served · deepskeptic ${health.version}`;
    const cmp = document.getElementById("comparisons"), runs = document.getElementById("runs");
    cmp.replaceChildren(...(comparisons.comparisons.length
      ? [el("h2", {}, "Comparisons"), el("div", { class: "grid" }, comparisons.comparisons.map(comparisonCard))] : []));
    runs.replaceChildren(el("h2", {}, "Runs"),
      models.models.length ? el("div", { class: "grid" }, models.models.map(runCard)) : el("p", { class: "muted" }, "no runs served"));
  } catch (e) { pageError.hidden = false; showError(pageError, e); return; }
  if (health.watch) {
    document.getElementById("watch").hidden = false;
    refreshWatch();
    setInterval(refreshWatch, 3000);
  }
}

document.getElementById("token-form").addEventListener("submit", e => {
  e.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
});
start();
