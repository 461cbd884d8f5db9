// The live dashboard: polls the host's own JSON API (/api/live, /ready) and draws with uPlot.
// Each chart element carries data-points (values drawn) and data-painted (non-blank canvas
// pixels after the last draw), which the browser test reads.
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const LINES_WHEN_ALL = 8;
const charts = {};

function $(id) { return document.getElementById(id); }

function text(value) {
  return typeof value === "number" ? value.toLocaleString("en-US", { maximumFractionDigits: 2 }) : String(value);
}

function fillTable(id, rows, columns) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = body.insertRow();
    const td = tr.insertCell();
    td.colSpan = columns;
    td.className = "empty";
    td.textContent = "none yet";
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) tr.insertCell().textContent = text(cell);
  }
}

// Counts non-blank pixels of a chart's canvas (sampling every 4th pixel).
function paintedPixels(u) {
  const canvas = u.ctx.canvas;
  if (!canvas.width || !canvas.height) return 0;
  const pixels = u.ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 16) if (pixels[i] !== 0) painted++;
  return painted;
}

// Counts the canvas pixels of exactly the candles' colours (every pixel of the bodies).
function candlePixels(u) {
  const canvas = u.ctx.canvas;
  if (!canvas.width || !canvas.height) return 0;
  const px = u.ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < px.length; i += 4) {
    const up = px[i] === 44 && px[i + 1] === 160 && px[i + 2] === 44;
    const down = px[i] === 214 && px[i + 1] === 39 && px[i + 2] === 40;
    if ((up || down) && px[i + 3] === 255) n++;
  }
  return n;
}

// (Re)draws the chart `id` with `series` (uPlot series options after x) and aligned `data`;
// `paint(u)`, when given, draws over the series (the candlesticks).
function draw(id, series, data, axes, paint) {
  const el = $(id);
  const key = series.map((s) => s.label).join("|");
  let chart = charts[id];
  if (!chart || chart.key !== key) {
    if (chart) chart.plot.destroy();
    const opts = {
      width: Math.max(320, el.clientWidth || 800),
      height: 260,
      series: [{}, ...series],
      axes: axes || [{}, {}],
      scales: { x: { time: true } },
      legend: { live: false },
      hooks: {
        draw: [(u) => {
          if (charts[id] && charts[id].paint) charts[id].paint(u);
          el.dataset.painted = String(paintedPixels(u));
        }],
      },
    };
    chart = { key, paint };
    charts[id] = chart;
    chart.plot = new uPlot(opts, data, el);
  } else {
    chart.paint = paint;
    chart.plot.setData(data);
  }
  let points = 0;
  for (let s = 1; s < data.length; s++) for (const v of data[s]) if (v != null) points++;
  el.dataset.points = String(points);
}

// Aligns several [[x, y], ...] lines on the union of their x values (null where a line has none).
function align(lines) {
  const xs = Array.from(new Set(lines.flatMap((l) => l.map((p) => p[0])))).sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = lines.map((line) => {
    const y = new Array(xs.length).fill(null);
    for (const [x, v] of line) y[at.get(x)] = v;
    return y;
  });
  return [xs, ...ys];
}

function updateInstruments(live) {
  const select = $("instrument");
  const known = new Set([...Object.keys(live.prices), ...live.forecasts.map((f) => String(f.instrument_token))]);
  const tokens = Array.from(known).sort((a, b) => Number(a) - Number(b));
  const have = Array.from(select.options).map((o) => o.value);
  const want = ["all", ...tokens];
  if (have.join() === want.join()) return;
  // The first time, ?instrument=TOKEN in the address picks one.
  const chosen = select.value || new URLSearchParams(location.search).get("instrument") || "all";
  select.replaceChildren(...want.map((v) => {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = v === "all" ? `busiest ${LINES_WHEN_ALL}, % change` : `instrument ${v}`;
    return o;
  }));
  select.value = want.includes(chosen) ? chosen : "all";
}

function drawPrices(live) {
  updateInstruments(live);
  const chosen = $("instrument").value || "all";
  if (chosen === "all") {
    const busiest = Object.entries(live.prices)
      .sort((a, b) => b[1].length - a[1].length)
      .slice(0, LINES_WHEN_ALL);
    const lines = busiest.map(([, line]) => line.map(([t, p]) => [t, (p / line[0][1] - 1) * 100]));
    const series = busiest.map(([token], i) => ({ label: token, stroke: COLORS[i % COLORS.length], spanGaps: true }));
    $("price-hint").textContent = "Each line: last price as % change from the first point kept (event time). Pick an instrument for its price and forecast.";
    draw("prices", series, align(lines));
    return;
  }
  const line = live.prices[chosen] || [];
  const rows = live.forecasts.filter((f) => String(f.instrument_token) === chosen);
  const toSeconds = (ts) => Date.parse(ts) / 1000;
  const forecast = rows.map((f) => [toSeconds(f.forecast_timestamp), f.forecast_value]);
  const lower = rows.map((f) => [toSeconds(f.forecast_timestamp), f.prediction_interval_lower_bound]);
  const upper = rows.map((f) => [toSeconds(f.forecast_timestamp), f.prediction_interval_upper_bound]);
  const series = [
    { label: "last price", stroke: COLORS[0], spanGaps: true },
    { label: "forecast", stroke: COLORS[1], dash: [6, 4], spanGaps: true },
    { label: "lower", stroke: "#d6272855", spanGaps: true },
    { label: "upper", stroke: "#d6272855", spanGaps: true },
  ];
  $("price-hint").textContent = rows.length
    ? `Last price and the latest forecast (${rows[0].model}) with its ${Math.round(rows[0].confidence_level * 100)}% interval.`
    : "Last price. No forecast for this instrument yet (stockpipe ml forecast writes them to the lake).";
  draw("prices", series, align([line, forecast, lower, upper]));
}

// Candlesticks of the chosen instrument's closed bars (the busiest one's when "all" is chosen):
// high and low as invisible series (they set the scales), each bar painted over them.
function drawBars(live) {
  const all = live.bars || {};
  const tokens = Object.keys(all);
  $("bars-section").hidden = tokens.length === 0;
  if (tokens.length === 0) return;
  const chosen = $("instrument").value;
  const token = all[chosen] ? chosen : tokens.sort((a, b) => all[b].length - all[a].length)[0];
  const candles = all[token];
  $("bars-instrument").textContent = `instrument ${token}`;
  $("bars-hint").textContent = "Closed bars of the aggregate stage (event time): green when the close is at or above the open.";
  const data = [candles.map((c) => c[0]), candles.map((c) => c[2]), candles.map((c) => c[3])];
  const series = [
    { label: "high", stroke: "rgba(0,0,0,0)", points: { show: false } },
    { label: "low", stroke: "rgba(0,0,0,0)", points: { show: false } },
  ];
  // The bar width: the smallest step between two starts (a minute without ticks has no bar).
  let width = Infinity;
  for (let i = 1; i < candles.length; i++) width = Math.min(width, candles[i][0] - candles[i - 1][0]);
  if (!Number.isFinite(width) || width <= 0) width = 60;
  draw("bars", series, data, undefined, (u) => {
    const ctx = u.ctx;
    const px = (t) => u.valToPos(t, "x", true);
    const py = (v) => u.valToPos(v, "y", true);
    const body = Math.max(1, (px(candles[0][0] + width) - px(candles[0][0])) * 0.6);
    ctx.save();
    for (const [t, o, h, l, c] of candles) {
      const x = px(t + width / 2);
      ctx.strokeStyle = ctx.fillStyle = c >= o ? "#2ca02c" : "#d62728";
      ctx.beginPath();
      ctx.moveTo(x, py(h));
      ctx.lineTo(x, py(l));
      ctx.stroke();
      const top = py(Math.max(o, c));
      ctx.fillRect(x - body / 2, top, body, Math.max(1, py(Math.min(o, c)) - top));
    }
    ctx.restore();
    $("bars").dataset.candlePixels = String(candlePixels(u));
  });
  $("bars").dataset.candles = String(candles.length);
}

function drawRates(live) {
  const xs = live.rates.map((r) => r.second);
  draw("rates", [
    { label: "consumed", stroke: COLORS[0] },
    { label: "accepted", stroke: COLORS[2] },
    { label: "refused", stroke: COLORS[1] },
  ], [xs, live.rates.map((r) => r.consumed), live.rates.map((r) => r.accepted), live.rates.map((r) => r.rejected)]);
}

function render(live) {
  const totals = $("totals");
  totals.replaceChildren(...Object.entries(live.totals).map(([k, v]) => {
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    dt.textContent = k.replace("_", " ");
    const dd = document.createElement("dd");
    dd.textContent = text(v);
    dd.id = `total-${k}`;
    div.append(dt, dd);
    return div;
  }));
  drawPrices(live);
  drawBars(live);
  drawRates(live);
  fillTable("rejects", live.rejects.map((r) => [r.stage, r.code, r.count]), 3);
  fillTable("guests", live.guests.map((g) => [g.stage, g.version, g.source]), 3);
  fillTable("swaps", live.history.slice(-10).reverse().map((e) => [e.stage, e.outcome, e.to_version || "", e.reason]), 4);
  fillTable("alerts", (live.alerts || []).map((a) => [a.event_time, a.rule, a.state, String(a.instrument_token), text(a.value), text(a.threshold)]), 6);
  const first = new Map();
  const last = new Map();
  for (const f of live.forecasts) {
    if (!first.has(f.instrument_token)) first.set(f.instrument_token, f);
    last.set(f.instrument_token, f);
  }
  fillTable("forecasts", Array.from(first.values()).map((f) => {
    const end = last.get(f.instrument_token);
    return [String(f.instrument_token), f.model, f.forecast_value,
      `${text(f.prediction_interval_lower_bound)} – ${text(f.prediction_interval_upper_bound)}`,
      `${text(end.forecast_value)} (${end.forecast_timestamp})`];
  }), 5);
  $("forecast-source").textContent = live.forecasts_source ? `from ${live.forecasts_source}` : "";
}

async function poll() {
  try {
    const response = await fetch("/api/live", { cache: "no-store" });
    if (!response.ok) throw new Error(`/api/live answered ${response.status}`);
    const live = await response.json();
    render(live);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("status").textContent = `cannot reach the host: ${e.message}`;
  }
}

async function pollReady() {
  const badge = $("ready");
  try {
    const response = await fetch("/ready", { cache: "no-store" });
    const body = await response.json();
    badge.className = `badge ${body.ready ? "ok" : "bad"}`;
    const waiting = Object.entries(body.dependencies).filter(([, s]) => !s.ready).map(([d, s]) => `${d}: ${s.detail}`);
    badge.textContent = body.ready ? "ready" : "not ready";
    badge.title = waiting.join("\n");
  } catch (e) {
    badge.className = "badge bad";
    badge.textContent = "unreachable";
  }
}

$("instrument").addEventListener("change", poll);
poll();
pollReady();
setInterval(poll, 1000);
setInterval(pollReady, 5000);
