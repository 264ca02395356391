// distgray status page: polls /api/status and redraws. Plain DOM, no build step; every value
// from the server goes in as text (never as HTML).
"use strict";

const POLL_MS = 500;
const PALETTE = ["#2f6fdb", "#e0782b", "#2a9d5c", "#c2417a", "#7a55c7", "#c9a227", "#1b9aaa",
  "#8c564b", "#5f7d1f", "#d64541"];
const colours = new Map();  // worker id -> colour, in order of first appearance

function colourOf(id) {
  if (!colours.has(id)) colours.set(id, PALETTE[colours.size % PALETTE.length]);
  return colours.get(id);
}

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const c of cells) tr.append(c instanceof Node ? wrap(c) : el("td", c));
  return tr;
}

function wrap(node) { const td = el("td"); td.append(node); return td; }

function fmtS(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m + " min " + Math.round(s - 60 * m) + " s";
}

const fmtMB = (b) => (b / 1e6).toFixed(1);
const fmtNum = (n, d = 0) => (n === null || n === undefined ? "–" : Number(n).toFixed(d));
const fmtBytes = (b) => (b >= 1e6 ? (b / 1e6).toFixed(1) + " MB" : (b / 1e3).toFixed(0) + " kB");

function renderJob(status) {
  const cur = status.current;
  const p = cur && cur.progress;
  $("job-name").textContent = cur ? cur.name : "No job yet";
  const state = cur ? cur.state : (status.serve ? "waiting for an upload" : "idle");
  $("job-state").textContent = state;
  $("job-state").className = "badge state-" + state.split(" ")[0];
  $("job-info").textContent = cur && cur.width
    ? `${cur.width}×${cur.height} ${cur.mode}, ${fmtBytes(cur.file_bytes)} → ${cur.output}`
      + (cur.ops ? ` after ${cur.ops}` : "") : "";
  $("job-error").hidden = !(cur && cur.error);
  $("job-error").textContent = cur && cur.error ? "Failed: " + cur.error : "";
  const frac = p ? p.fraction_done : (cur && cur.state === "done" ? 1 : 0);
  const pct = Math.floor(frac * 1000) / 10;
  $("progress-fill").style.width = pct + "%";
  $("progress-pct").textContent = pct.toFixed(1) + "%";
  document.querySelector(".progress").setAttribute("aria-valuenow", String(pct));
  $("fig-rows").textContent = p ? `${p.rows_done} / ${p.height}` : "–";
  // Strips are sized on demand, so their total is known only once every row is handed out ("+").
  $("fig-strips").textContent = p
    ? `${p.strips_done} / ${p.strips_planned}${p.rows_unassigned ? "+" : ""} (${p.strips_running} running)` : "–";
  $("fig-rate").textContent = p && p.mp_per_s !== null ? p.mp_per_s.toFixed(1) + " MP/s" : "–";
  $("fig-elapsed").textContent = p ? fmtS(p.elapsed_s) : "–";
  $("fig-eta").textContent = p ? (p.finished ? "done" : (p.eta_s === null ? "measuring…" : fmtS(p.eta_s))) : "–";
  $("fig-requeued").textContent = p ? `${p.requeued.length} / ${p.backups}` : "–";
  renderStripMap(p);
  const rq = $("requeued");
  rq.replaceChildren(...(p ? p.requeued : []).map(
    (r) => el("li", `strip ${r.strip} requeued from ${r.worker}: ${r.reason}`)));
}

function renderStripMap(p) {
  const map = $("strip-map");
  if (!p) { map.replaceChildren(); return; }
  const parts = p.strip_map.map((s) => {
    const d = el("div", null, {
      class: "strip " + s.state + (s.retried ? " retried" : ""),
      title: `rows ${s.start}–${s.stop - 1}: ${s.state}${s.worker ? " on " + s.worker : ""}${s.retried ? " (requeued)" : ""}`,
      "data-worker": s.worker || "",
    });
    d.style.left = (100 * s.start / p.height) + "%";
    d.style.width = Math.max(0.15, 100 * (s.stop - s.start) / p.height) + "%";
    if (s.worker) d.style.background = colourOf(s.worker);
    return d;
  });
  map.replaceChildren(...parts);
}

function renderEngine(status) {
  const engine = status.engine || { name: "builtin" };
  $("engine").hidden = engine.name !== "dask";
  const link = $("engine-dashboard");
  link.hidden = !engine.dashboard;
  if (engine.dashboard && link.getAttribute("href") !== engine.dashboard) link.setAttribute("href", engine.dashboard);
}

function renderInbox(status) {
  // Watch mode: the watched folder's files, waiting (not whole yet), converting, done, failed.
  const inbox = status.inbox;
  $("inbox").hidden = !inbox;
  if (!inbox) return;
  $("inbox-folder").textContent = inbox.folder;
  $("inbox-counts").replaceChildren(...["waiting", "converting", "done", "failed"].map((state) =>
    el("span", `${inbox.counts[state] || 0} ${state}`, { class: "badge state-" + state, "data-count": state })));
  $("inbox-files").querySelector("tbody").replaceChildren(...inbox.files.map((f) =>
    row([f.name, el("span", f.state, { class: "badge state-" + f.state }), f.reason || ""],
      { "data-file": f.name, "data-state": f.state })));
}

function renderWorkers(status) {
  renderEngine(status);
  const ws = status.workers;
  $("no-workers").hidden = ws.some((w) => w.state === "idle" || w.state === "busy");
  $("worker-command").textContent = status.worker_command;
  $("workers").querySelector("tbody").replaceChildren(...ws.map((w) => {
    const swatch = el("span", null, { class: "swatch" });
    swatch.style.background = colourOf(w.id);
    const state = el("span", w.state, { class: "badge state-" + w.state, title: w.reason || "" });
    return row([swatch, w.id, w.address, state, fmtNum(w.speed_rows_per_s), fmtNum(w.speed_mp_per_s, 2),
      w.strips, fmtMB(w.bytes_in), fmtMB(w.bytes_out), w.failures,
      (w.state === "idle" || w.state === "busy") ? w.heartbeat_age_s.toFixed(1) + " s ago" : (w.reason || "–")],
    { "data-worker": w.id, class: "worker-" + w.state });
  }));
}

function renderResult(status) {
  const cur = status.current;
  const show = cur && cur.state === "done";
  $("result").hidden = !show;
  if (!show) return;
  for (const which of ["input", "output"]) {
    const img = $("preview-" + which);
    const src = `/jobs/${cur.id}/thumbnail/${which}.png`;
    if (cur.thumbnails.includes(which) && img.getAttribute("src") !== src) img.setAttribute("src", src);
  }
  const dl = $("download");
  dl.setAttribute("href", `/jobs/${cur.id}/download`);
  dl.setAttribute("download", cur.output);
  dl.textContent = "Download " + cur.output;
  const ws = cur.summary ? Object.entries(cur.summary.workers).sort() : [];
  $("summary").querySelector("tbody").replaceChildren(...ws.map(([id, w]) => row(
    [id, w.state, w.strips, w.rows, fmtMB(w.bytes_in), fmtMB(w.bytes_out), w.busy_s.toFixed(3),
      fmtNum(w.rows_per_s)], { "data-worker": id })));
}

function renderHistory(status) {
  $("history").querySelector("tbody").replaceChildren(...status.jobs.map((j) => {
    const link = j.download ? el("a", "download", { href: `/jobs/${j.id}/download` }) : el("span", j.error || "");
    return row([j.id, j.name, j.ops || "–", fmtBytes(j.file_bytes),
      el("span", j.state, { class: "badge state-" + j.state.split(" ")[0] }),
      fmtS(j.seconds), link], { "data-job": String(j.id) });
  }));
}

// The last upload of this page (one file or several): each input beside its output, and a ZIP.
let batch = null;

function thumb(job, which) {
  if (!job.thumbnails.includes(which)) return el("span", "–", { class: "muted" });
  return el("img", null, { src: `/jobs/${job.id}/thumbnail/${which}.png`, alt: `${job.name} ${which}`,
    class: "thumb thumb-" + which });
}

function renderBatch(status) {
  const card = $("batch");
  if (!card || !batch) return;
  card.hidden = false;
  const byId = new Map(status.jobs.map((j) => [j.id, j]));
  const jobs = batch.ids.map((id) => byId.get(id)).filter(Boolean);
  const done = jobs.filter((j) => j.state === "done").length;
  const failed = jobs.filter((j) => j.state === "failed").length;
  $("batch-ops").textContent = batch.ops ? "— " + batch.ops : "— grayscale only";
  $("batch-count").textContent = `${done} of ${batch.ids.length} done` + (failed ? `, ${failed} failed` : "")
    + (batch.rejected.length ? `; refused: ${batch.rejected.map((r) => r.error).join("; ")}` : "");
  const zip = $("batch-zip");
  zip.hidden = done === 0;
  zip.setAttribute("href", "/jobs/download.zip?ids=" + batch.ids.join(","));
  $("batch-files").querySelector("tbody").replaceChildren(...jobs.map((j) => {
    const key = `${j.id}:${j.state}:${j.thumbnails.join(",")}`;
    const old = document.querySelector(`#batch-files tr[data-job="${j.id}"]`);
    if (old && old.dataset.key === key) return old;  // unchanged: keep its images loaded
    const link = j.download ? el("a", "download", { href: `/jobs/${j.id}/download` }) : el("span", j.error || "");
    const tr = row([j.id, j.name, el("span", j.state, { class: "badge state-" + j.state.split(" ")[0] }),
      thumb(j, "input"), thumb(j, "output"), link], { "data-job": String(j.id) });
    tr.dataset.key = key;
    return tr;
  }));
}

let failures = 0;
async function poll() {
  try {
    const resp = await fetch("/api/status", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const status = await resp.json();
    failures = 0;
    $("connection").textContent = "live";
    $("connection").className = "badge state-running";
    $("uptime").textContent = "master up " + fmtS(status.uptime_s);
    const limit = $("upload-limit");
    if (limit) limit.textContent = `up to ${Math.round(status.max_upload_bytes / 1048576)} MiB, ${(status.max_pixels / 1e6).toFixed(0)} MP`;
    renderJob(status);
    renderWorkers(status);
    renderInbox(status);
    renderResult(status);
    renderHistory(status);
    renderBatch(status);
  } catch (err) {
    failures += 1;
    $("connection").textContent = failures > 2 ? "master unreachable (stopped?)" : "reconnecting…";
    $("connection").className = "badge state-failed";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function offerOperations() {
  const select = $("upload-op");
  if (!select) return;
  try {
    const resp = await fetch("/api/ops", { cache: "no-store" });
    const body = await resp.json();
    for (const op of body.offered) select.append(el("option", op, { value: op }));
    $("upload-known").textContent = "Operations: " + body.known + ". A chain: several, ';'-separated.";
  } catch (err) { /* the form still converts to gray */ }
}

function setupUpload() {
  const form = $("upload-form");
  if (!form) return;
  offerOperations();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = $("upload-error"), ok = $("upload-ok"), button = $("upload-button");
    error.hidden = true; ok.hidden = true; button.disabled = true;
    try {
      const resp = await fetch("/api/jobs", { method: "POST", body: new FormData(form) });
      const body = await resp.json().catch(() => ({ error: "HTTP " + resp.status }));
      if (!resp.ok) throw new Error(body.error || (body.rejected || []).map((r) => r.error).join("; ") || "HTTP " + resp.status);
      const jobs = body.jobs || [body];
      batch = { ids: jobs.map((j) => j.id), ops: body.ops !== undefined ? body.ops : (jobs[0].ops || ""),
        rejected: body.rejected || [] };
      ok.textContent = jobs.length === 1 ? `Queued as job ${jobs[0].id}.`
        : `Queued ${jobs.length} files as jobs ${jobs[0].id}–${jobs[jobs.length - 1].id}.`;
      ok.hidden = false;
      form.reset();
    } catch (err) {
      error.textContent = "Upload refused: " + err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => { setupUpload(); poll(); });
