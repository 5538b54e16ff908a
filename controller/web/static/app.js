"use strict";
// Fills the page from /api/status and /api/emissions (read-only); refreshes every 10 s.
const token = new URLSearchParams(window.location.search).get("token");
function withToken(path, extra) {
  const q = new URLSearchParams(extra || {});
  if (token) q.set("token", token);
  const s = q.toString();
  return s ? path + "?" + s : path;
}
function text(id, value) { document.getElementById(id).textContent = value; }
function fmt(v, digits) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-3)) return v.toExponential(3);
    if (digits !== undefined) return v.toFixed(digits);
    return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
  }
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => k + "=" + fmt(x)).join(", ");
  return String(v);
}
function when(t) {
  return typeof t === "number" ? new Date(t * 1000).toISOString().replace(".000Z", "Z").replace("T", " ") : fmt(t);
}
function rows(id, pairs) {
  const table = document.getElementById(id);
  table.replaceChildren();
  for (const [k, v, cls] of pairs) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    const td = tr.insertCell();
    td.textContent = v;
    if (cls) td.className = cls;
  }
}
function clockText(c) {
  const src = c.source || {};
  const best = src.best ? src.best + (src.synchronised ? " (synchronised)" : "") : "no synchronised source";
  return best + ", offset " + fmt(c.offset_ms, 1) + " ms (tolerance " + fmt(c.tolerance_ms) + " ms)";
}
function render(s) {
  text("station-name", s.station_name ? "“" + s.station_name + "”" : "");
  text("station-state", s.state);
  text("state-since", "since " + when(s.state_since) + " (station clock)");
  text("updated", "· updated " + when(s.updated_at || Date.now() / 1000));
  rows("machines", Object.entries(s.machines || {}).sort().map(([k, v]) => [k, fmt(v)]));
  const caps = Object.entries(s.devices || {}).map(([k, d]) => [
    "device " + k, d.state + ", " + fmt(d.captures) + " captures, last " + fmt(d.last)]);
  caps.push(["worker", fmt(s.worker) + ", " + fmt(s.worker_pairs) + " pairs processed"]);
  caps.push(["slots", fmt(s.slots)]);
  if (s.stored_from_slave !== undefined) caps.push(["files from the slave", fmt(s.stored_from_slave)]);
  rows("captures", caps);
  const st = s.storage || {};
  const temps = Object.entries(s.temperatures || {}).filter(([, v]) => v !== null)
    .map(([k, v]) => k + " " + v.toFixed(1) + " °C").join(", ");
  const volts = Object.entries(s.voltages || {}).map(([k, v]) => k + " " + fmt(v, 2) + " V").join(", ");
  const link = s.link || {};
  rows("health", [
    ["disk", fmt(st.free_mb, 0) + " MB free" + (st.paused ? " — acquisition PAUSED" : ""), st.paused ? "bad" : ""],
    ["clock", clockText(s.clock || {}), (s.clock || {}).offset_ok === false ? "bad" : ""],
    ["link", link.connected ? fmt(link.state) : fmt(link.state) + " (not connected)", link.connected ? "ok" : "bad"],
    ["temperatures", temps || "none reported"],
    ["voltages", volts || "none reported"],
    ["control port", fmt(s.ext_port)],
  ]);
  const d = s.delivery;
  rows("delivery", d ? [
    ["state", fmt(d.state), d.state === "backoff" ? "bad" : ""],
    ["target", fmt(d.target)],
    ["delivered", fmt(d.delivered_files) + " files"],
    ["backlog", fmt(d.backlog_files) + " files, " + fmt(d.backlog_bytes) + " bytes"],
    ["lag", fmt(d.lag_s) + " s (oldest waiting file)"],
    ["last error", fmt(d.last_error)],
  ] : [["delivery", "not configured"]]);
  const faults = (s.faults || []).slice(-10).reverse();
  const details = (f) => Object.entries(f).filter(([k]) => !["time", "real_time", "kind"].includes(k))
    .map(([k, v]) => k + "=" + fmt(v)).join(", ");
  rows("faults", faults.length ? faults.map((f) => [when(f.real_time), f.kind + (details(f) ? ": " + details(f) : "")])
    : [["", "no faults"]]);
  text("today", s.today);
  const img = (id, name) => {  // only images that exist: a 404 would be a console error
    const el = document.getElementById(id), file = (s.images || {})[name];
    if (file && el.dataset.file !== file) { el.src = withToken("img/" + name + ".png", {f: file}); el.dataset.file = file; }
    el.title = file || "no image yet";
  };
  img("img-A", "A"); img("img-B", "B"); img("img-AA", "AA");
  const plot = document.getElementById("plot"), missing = document.getElementById("plot-missing");
  if (s.daily_plot) {
    plot.src = withToken("plot.png", {day: s.today, t: s.updated_at});
    plot.hidden = false; missing.hidden = true;
  } else {
    plot.hidden = true; missing.hidden = false;
    missing.textContent = "No emission-rate plot for " + s.today + " yet (the processing worker writes it during the day).";
  }
}
const SVG = "http://www.w3.org/2000/svg";
function parseUtc(t) {
  // "YYYY-MM-DD HH:MM:SS" (UTC, the original's format) or ISO 8601 with its offset.
  const iso = String(t).replace(" ", "T");
  return Date.parse(/(Z|[+-]\d\d:\d\d)$/.test(iso) ? iso : iso + "Z");
}
function sparkline(id, points, unit) {
  // A small line chart of [time text, value] points (the day's series), drawn as SVG.
  const box = document.getElementById(id);
  box.replaceChildren();
  const pts = points.map(([t, v]) => [parseUtc(t), v])
    .filter(([t, v]) => typeof v === "number" && !Number.isNaN(t));
  if (pts.length < 2) return;
  const w = 600, h = 120, pad = 4;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(0, ...ys), y1 = Math.max(...ys);
  const sx = (x) => pad + (w - 2 * pad) * (x - x0) / Math.max(x1 - x0, 1);
  const sy = (y) => h - pad - (h - 2 * pad) * (y - y0) / Math.max(y1 - y0, 1e-12);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(h));
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", pts.map(([x, y]) => sx(x).toFixed(1) + "," + sy(y).toFixed(1)).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#2a6fb0");
  svg.appendChild(line);
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "8");
  label.setAttribute("y", "14");
  label.setAttribute("font-size", "11");
  label.textContent = fmt(y1, 3) + " " + unit + " max; " + new Date(x0).toISOString().slice(11, 16) + "–" +
    new Date(x1).toISOString().slice(11, 16) + " UTC";
  svg.appendChild(label);
  box.appendChild(svg);
}
function renderResults(r) {
  const series = Object.entries(r.emissions || {});
  const now = series.map(([name, rows]) => {
    const last = rows[rows.length - 1];
    return name + ": " + fmt(last["flux_(kg/s)"], 3) + " kg/s at " + fmt(last.datetime);
  });
  text("emission-now", now.length ? now.join("; ") : "No emission rates for " + r.day + " yet.");
  const first = series.length ? series[0] : null;
  sparkline("emission-chart", first ? first[1].map((x) => [x.datetime, x["flux_(kg/s)"]]) : [], "kg/s");
  const sum = r.summary;
  rows("summary", sum ? Object.entries(sum).filter(([k]) => k !== "file").slice(0, 20).map(([k, v]) => [k, fmt(v)])
    : [["daily summary", "not written yet"]]);
  const doas = r.doas || [];
  const unit = r.doas_unit || "molecules/cm²", ppmm = r.ppmm_to_molecules_cm2;
  sparkline("doas-chart", doas.map((x) => [x.Time, x["Column density"]]), unit);
  if (doas.length) {
    const last = doas[doas.length - 1];
    const cds = doas.map((x) => x["Column density"]).filter((x) => typeof x === "number");
    const inPpmm = typeof last["Column density"] === "number" && ppmm ? " (" + fmt(last["Column density"] / ppmm, 0) +
      " ppm·m)" : "";
    text("doas", doas.length + " spectra today; latest " + fmt(last["Column density"]) + " ± " +
      fmt(last["CD error"]) + " " + unit + inPpmm + " at " + fmt(last.Time) + "; range " + fmt(Math.min(...cds)) +
      " to " + fmt(Math.max(...cds)) + " " + unit);
  } else {
    text("doas", "No DOAS columns for " + r.day + " yet.");
  }
}
async function getJson(path, extra) {
  const resp = await fetch(withToken(path, extra));
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}
async function refresh() {
  const err = document.getElementById("error");
  try {
    const s = await getJson("api/status");
    render(s);
    renderResults(await getJson("api/emissions", {day: s.today}));
    err.hidden = true;
  } catch (e) {
    err.hidden = false;
    err.textContent = "Cannot read the station's status: " + e.message;
  }
}
for (const id of ["link-status", "link-emissions", "link-metrics"]) {
  const a = document.getElementById(id);
  a.href = withToken(a.getAttribute("href"));
}
refresh();
setInterval(refresh, 10000);
