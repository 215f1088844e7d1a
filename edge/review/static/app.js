/* edgeqc review page: plain JS, no build step, no external assets.
 * Data: /api/* (JSON) and /api/events (Server-Sent Events: reject, verdict, station, resync).
 * All text from the server goes through textContent (never innerHTML). */
"use strict";

const $ = (sel) => document.querySelector(sel);
const STALE_MS = 5000;

const state = {
  config: { labels: [], pass_classes: [], shift_start: 0 },
  items: [], total: 0, page: 1, pageSize: 50,
  selectedId: null,
  newCount: 0,
  stations: new Map(),   // endpoint -> {data, seenAt}
  connected: false,
};

/* ------------------------------------------------------------------ helpers */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
const pct = (x, digits = 1) => (x === null || x === undefined ? "–" : (100 * x).toFixed(digits) + " %");
const fmtTime = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "–");
const fmtClock = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

async function api(path, opts) {
  const r = await fetch(path, opts);
  if (r.status === 401) { location.href = "/login?next=/"; throw new Error("login required"); }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((body && body.detail) || r.statusText);
  return body;
}

function who() {
  const v = $("#who").value.trim();
  return v || "operator";
}

/* ------------------------------------------------------------------ filters */
function toEpoch(input) {
  return input.value ? new Date(input.value).getTime() / 1000 : null;
}
function toLocalInput(ts) {
  const d = new Date(ts * 1000);
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
}
function filters() {
  return {
    label: $("#f-label").value || null,
    since: toEpoch($("#f-since")),
    until: toEpoch($("#f-until")),
    reviewed: $("#f-reviewed").value === "" ? null : $("#f-reviewed").value === "true",
  };
}
function renderFilterSummary() {
  const f = filters();
  const parts = [];
  if (f.label) parts.push("class " + f.label);
  if (f.since !== null) parts.push("from " + fmtTime(f.since));
  if (f.until !== null) parts.push("to " + fmtTime(f.until));
  if (f.reviewed !== null) parts.push(f.reviewed ? "reviewed" : "unreviewed");
  $("#filter-summary").textContent = parts.length ? parts.join(", ") : "none — live list";
  $("#filter-box").toggleAttribute("data-active", parts.length > 0);
}
function isLive() {
  const f = filters();
  return state.page === 1 && !f.label && f.since === null && f.until === null && f.reviewed === null;
}
function matches(row) {
  const f = filters();
  if (f.label && row.label !== f.label) return false;
  if (f.since !== null && row.ts < f.since) return false;
  if (f.until !== null && row.ts >= f.until) return false;
  if (f.reviewed !== null && (row.review !== null) !== f.reviewed) return false;
  return true;
}

/* ------------------------------------------------------------------ loading */
async function loadConfig() {
  state.config = await api("/api/config");
  const sel = $("#f-label");
  const cur = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "all"), ...state.config.labels.map((l) => el("option", { value: l }, l)));
  sel.value = cur;
}

// Live events that arrive while a list request is in flight are replayed onto its answer, so a
// reject (or verdict) pushed during a reload never disappears from the list.
let listGen = 0;
let heldEvents = null;

async function loadList() {
  const gen = ++listGen;
  if (heldEvents === null) heldEvents = [];
  const f = filters();
  const q = new URLSearchParams({ page: state.page, page_size: state.pageSize });
  if (f.label) q.set("label", f.label);
  if (f.since !== null) q.set("since", f.since);
  if (f.until !== null) q.set("until", f.until);
  if (f.reviewed !== null) q.set("reviewed", f.reviewed);
  let r;
  try {
    r = await api("/api/rejects?" + q);
  } finally {
    if (gen === listGen && r === undefined) heldEvents = null;
  }
  if (gen !== listGen) return;  // a newer request (filter change, reconnect) is under way
  const held = heldEvents || [];
  heldEvents = null;
  state.items = r.items;
  state.total = r.total;
  state.newCount = 0;
  renderFilterSummary();
  for (const [kind, row] of held) (kind === "reject" ? onReject : onVerdict)(row, true);
  if (!state.items.some((x) => x.id === state.selectedId)) {
    state.selectedId = state.items.length ? (firstUnreviewed() ?? state.items[0].id) : null;
  }
  renderList();
  renderDetail();
}

let statsTimer = null;
function refreshStats() {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(loadStats, 250);
}
async function loadStats() {
  const s = await api("/api/stats");
  const box = $("#shift");
  const classes = Object.entries(s.by_class).map(([k, v]) => el("span", { class: "cls" }, k + " ", el("b", {}, v.rejects)));
  box.replaceChildren(
    "Shift since " + fmtClock(s.since) + ": ",
    el("b", { id: "shift-rejects" }, s.rejects), " rejects · reviewed ", el("b", {}, s.reviewed),
    " · false reject rate ", el("b", { id: "shift-frr" }, pct(s.false_reject_rate)),
    s.reviewed ? ` (${s.good}/${s.reviewed})` : "", el("br"), ...classes,
  );
}

async function loadStations() {
  const list = await api("/api/stations");
  const now = Date.now();
  for (const s of list) {
    state.stations.set(s.endpoint, { data: s, seenAt: s.status_age_s === null ? null : now - s.status_age_s * 1000 });
  }
  renderStations();
}

async function reloadAll() {
  await loadConfig();
  await Promise.all([loadList(), loadStats(), loadStations()]);
}

/* ------------------------------------------------------------------ rendering */
function badge(row) {
  if (row.review === "good") return el("span", { class: "badge good" }, "good");
  if (row.review === "defect") return el("span", { class: "badge defect" }, "defect");
  return el("span", { class: "badge open" }, "open");
}

function rowItem(row, fresh) {
  const thumb = row.has_image
    ? el("img", { src: `/api/rejects/${row.id}/image`, alt: "", loading: "lazy" })
    : el("div", { class: "noimg" }, "no frame");
  const li = el("li", {
    class: "reject" + (row.id === state.selectedId ? " selected" : "") + (fresh ? " fresh" : ""),
    dataset: { id: row.id }, onclick: () => select(row.id),
  }, thumb,
  el("div", { class: "info" },
    el("div", { class: "l1" }, row.label + " ", el("span", { class: "prob" }, pct(row.probability))),
    el("div", { class: "l2" }, fmtTime(row.ts) + " · part " + row.part_id + " · " + row.station_id)),
  badge(row));
  return li;
}

function renderList(freshId) {
  const ol = $("#rejects");
  ol.replaceChildren(...state.items.map((r) => rowItem(r, r.id === freshId)));
  const first = state.total ? (state.page - 1) * state.pageSize + 1 : 0;
  const last = Math.min(state.total, (state.page - 1) * state.pageSize + state.items.length);
  $("#page-info").textContent = `${first}–${last} of ${state.total}` + (isLive() ? " · live" : "");
  $("#prev").disabled = state.page <= 1;
  $("#next").disabled = last >= state.total;
  const banner = $("#new-banner");
  banner.hidden = state.newCount === 0;
  banner.textContent = `${state.newCount} new reject${state.newCount === 1 ? "" : "s"} — show live list`;
  const sel = ol.querySelector(".selected");
  if (sel) sel.scrollIntoView({ block: "nearest" });
}

function selected() {
  return state.items.find((r) => r.id === state.selectedId) || null;
}

function classesFor(row) {
  const names = Object.keys(row.probabilities || {});
  return names.length ? names : state.config.labels;
}

function renderDetail() {
  const row = selected();
  $("#empty").hidden = !!row;
  $("#detail-body").hidden = !row;
  if (!row) return;
  const img = $("#detail-img");
  img.hidden = !row.has_image;
  $("#no-frame").hidden = row.has_image;
  const src = `/api/rejects/${row.id}/image`;
  if (row.has_image && img.getAttribute("src") !== src) img.setAttribute("src", src);
  $("#detail-body").dataset.id = row.id;
  $("#d-label").textContent = row.label;
  $("#d-prob").textContent = pct(row.probability);
  $("#d-reason").textContent = row.failsafe ? "fail-safe " + row.failsafe : row.reason === "uncertain" ? "uncertain" : "";
  $("#d-reason").hidden = !$("#d-reason").textContent;
  $("#d-top").textContent = row.top.map(([k, v]) => `${k} ${pct(v)}`).join(" · ") || "–";
  $("#d-time").textContent = fmtTime(row.ts);
  $("#d-part").textContent = row.part_id + "  (seq " + row.seq + ")";
  $("#d-station").textContent = row.station_id;
  $("#d-source").textContent = row.source_id || "–";
  const st = $("#verdict-state");
  st.className = "state" + (row.review ? " " + row.review : "");
  if (!row.review) st.textContent = "Not reviewed yet";
  else {
    const what = row.review === "good"
      ? "Part is good (false reject)" + (row.true_class ? " — " + row.true_class : "")
      : "Defect confirmed — " + (row.true_class || row.label);
    st.textContent = `${what} · by ${row.reviewed_by} at ${fmtTime(row.reviewed_ts)}`;
  }
  $("#btn-good").classList.toggle("chosen", row.review === "good");
  $("#btn-defect").classList.toggle("chosen", row.review === "defect");
  const pass = new Set(state.config.pass_classes);
  const chosen = row.review ? (row.true_class || (row.review === "defect" ? row.label : state.config.pass_classes[0])) : null;
  $("#classes").classList.remove("attention");
  $("#classes").replaceChildren(...classesFor(row).map((name, i) => el("button", {
    class: (pass.has(name) ? "pass" : "defect") + (name === chosen ? " chosen" : ""),
    dataset: { cls: name }, title: pass.has(name) ? "part is good" : "defect of this class",
    onclick: () => submitClass(name),
  }, i < 9 ? el("kbd", {}, i + 1) : null, " " + name)));
}

function renderStations() {
  const now = Date.now();
  const tiles = [];
  for (const { data: s, seenAt } of state.stations.values()) {
    const st = s.status || {};
    const stale = seenAt === null || now - seenAt > STALE_MS;
    const faults = [];
    if (!s.connected) faults.push("link down");
    if (st.camera && st.camera !== "ok") faults.push("camera " + st.camera);
    if (st.plc === "lost") faults.push("PLC lost");
    if (st.model && st.model !== "ok") faults.push("model " + st.model);
    const cls = "station" + (faults.length ? " bad" : stale ? " stale" : "");
    tiles.push(el("div", {
      class: cls, dataset: { endpoint: s.endpoint },
      title: `${s.endpoint}\nseq gaps ${s.seq_gaps} · restarts ${s.restarts} · reconnects ${s.connects}` +
        ` · frames missing ${s.missing_frames} · corrupt ${s.corrupt_images} · bad messages ${s.bad_messages}` +
        (s.last_error ? "\nlast error: " + s.last_error : ""),
    },
    el("div", { class: "name" }, s.station_id || s.endpoint),
    el("div", {}, st.parts_per_min !== undefined ? `${st.parts_per_min.toFixed(1)} parts/min · reject ${pct(st.reject_rate)}` : "no status yet"),
    el("div", { class: "meta" },
      `camera ${st.camera || "?"} · PLC ${st.plc || "?"}`,
      faults.length ? el("span", { class: "state-bad" }, " · " + faults.join(", ")) : null,
      stale && seenAt !== null ? ` · no status for ${Math.round((now - seenAt) / 1000)} s` : "",
      s.seq_gaps ? ` · ${s.seq_gaps} missed` : ""),
    ));
  }
  $("#stations").replaceChildren(...tiles);
}

/* ------------------------------------------------------------------ actions */
function select(id) {
  state.selectedId = id;
  for (const li of document.querySelectorAll("#rejects .reject")) li.classList.toggle("selected", Number(li.dataset.id) === id);
  document.querySelector("#rejects .selected")?.scrollIntoView({ block: "nearest" });
  $("#msg").textContent = "";
  $("#detail").scrollTop = 0;
  renderDetail();
}

function firstUnreviewed(fromIndex = 0) {
  const after = state.items.slice(fromIndex).find((r) => !r.review);
  const before = state.items.slice(0, fromIndex).reverse().find((r) => !r.review);
  return (after || before)?.id ?? null;
}

function move(step) {
  const i = state.items.findIndex((r) => r.id === state.selectedId);
  const j = Math.max(0, Math.min(state.items.length - 1, (i < 0 ? 0 : i + step)));
  if (state.items[j]) select(state.items[j].id);
}

function upsert(row) {
  const i = state.items.findIndex((r) => r.id === row.id);
  if (i >= 0 && (row.reviewed_ts ?? 0) >= (state.items[i].reviewed_ts ?? 0)) state.items[i] = row;
  return i >= 0;
}

function onReject(row, replay = false) {
  if (heldEvents !== null && !replay) heldEvents.push(["reject", row]);
  if (upsert(row)) {
    if (!replay) { renderList(); if (row.id === state.selectedId) renderDetail(); }
    return;
  }
  if (!replay && (!state.config.labels.length
      || Object.keys(row.probabilities).some((l) => !state.config.labels.includes(l)))) {
    loadConfig().catch(() => {});
  }
  if (state.page === 1 && matches(row)) {
    state.items.unshift(row);
    state.items.sort((a, b) => b.ts - a.ts || b.id - a.id);
    state.total += 1;
    if (state.items.length > state.pageSize) state.items.pop();
    const cur = selected();
    if (state.selectedId === null || (cur && cur.review && isLive())) state.selectedId = row.id;
    if (!replay) { renderList(row.id); renderDetail(); }
  } else {
    state.newCount += 1;
    if (!replay) renderList();
  }
  if (!replay) refreshStats();
}

function onVerdict(row, replay = false) {
  if (heldEvents !== null && !replay) heldEvents.push(["verdict", row]);
  if (upsert(row) && !replay) { renderList(); if (row.id === state.selectedId) renderDetail(); }
  if (!replay) refreshStats();
}

async function submit(verdict, trueClass) {
  const row = selected();
  if (!row) return;
  const msg = $("#msg");
  msg.textContent = "saving…";
  try {
    const updated = await api(`/api/rejects/${row.id}/verdict`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ verdict, true_class: trueClass ?? null, who: who() }),
    });
    upsert(updated);
    msg.textContent = "saved";
    const i = state.items.findIndex((r) => r.id === updated.id);
    const next = firstUnreviewed(i + 1);
    renderList();
    if (next !== null) select(next); else renderDetail();
    refreshStats();
  } catch (e) {
    if (/choose the defect class/.test(e.message)) {
      msg.textContent = "Which defect? Tap the defect class below (the model named no defect class for this part).";
      $("#classes").classList.add("attention");
    } else {
      msg.textContent = "Not saved: " + e.message;
    }
    msg.scrollIntoView({ block: "nearest" });
  }
}

function submitClass(name) {
  if (state.config.pass_classes.includes(name)) submit("good", name);
  else submit("defect", name);
}

/* ------------------------------------------------------------------ live events */
let es = null;
function connect() {
  es = new EventSource("/api/events");
  es.addEventListener("hello", () => {
    setConn(true);
    reloadAll().catch(() => {});  // also catches up on whatever came while (re)connecting
  });
  es.addEventListener("reject", (ev) => onReject(JSON.parse(ev.data)));
  es.addEventListener("verdict", (ev) => onVerdict(JSON.parse(ev.data)));
  es.addEventListener("station", (ev) => {
    const s = JSON.parse(ev.data);
    const prev = state.stations.get(s.endpoint);
    const seenAt = s.status_age_s === null ? (prev ? prev.seenAt : null) : Date.now() - s.status_age_s * 1000;
    state.stations.set(s.endpoint, { data: s, seenAt });
    renderStations();
  });
  es.addEventListener("resync", () => reloadAll().catch(() => {}));
  es.onerror = () => {
    setConn(false);
    if (es.readyState === EventSource.CLOSED) {  // e.g. 401 or server gone for good: retry ourselves
      setTimeout(() => api("/api/config").then(connect, () => setTimeout(connect, 3000)), 2000);
    }
  };
}
function setConn(on) {
  state.connected = on;
  const c = $("#conn");
  c.className = "conn " + (on ? "on" : "off");
  c.textContent = on ? "live" : "reconnecting…";
}

/* ------------------------------------------------------------------ keyboard */
function onKey(e) {
  if (e.ctrlKey || e.altKey || e.metaKey) return;
  const t = e.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
  const help = $("#help");
  const k = e.key;
  if (k === "?") { help.open ? help.close() : help.showModal(); e.preventDefault(); return; }
  if (help.open) return;
  const row = selected();
  if (k === "d" || k === "D") { if (row) submit("defect"); }
  else if (k === "g" || k === "G") { if (row) submit("good"); }
  else if (/^[1-9]$/.test(k)) { const names = row ? classesFor(row) : []; const n = names[Number(k) - 1]; if (n) submitClass(n); }
  else if (k === "j" || k === "J" || k === "ArrowDown") move(1);
  else if (k === "k" || k === "K" || k === "ArrowUp") move(-1);
  else if (k === "n" || k === "N") { const id = firstUnreviewed(); if (id !== null) select(id); }
  else if (k === "l" || k === "L") goLive();
  else return;
  e.preventDefault();
}

function goLive() {
  $("#filters").reset();  // the reset handler reloads page 1
}

/* ------------------------------------------------------------------ start */
function init() {
  const saved = localStorage.getItem("edgeqc.review.who");
  if (saved) $("#who").value = saved;
  $("#who").addEventListener("change", () => localStorage.setItem("edgeqc.review.who", $("#who").value.trim()));
  $("#btn-defect").addEventListener("click", () => submit("defect"));
  $("#btn-good").addEventListener("click", () => submit("good"));
  $("#help-btn").addEventListener("click", () => $("#help").showModal());
  $("#prev").addEventListener("click", () => { state.page -= 1; loadList(); });
  $("#next").addEventListener("click", () => { state.page += 1; loadList(); });
  $("#new-banner").addEventListener("click", goLive);
  for (const id of ["#f-label", "#f-since", "#f-until", "#f-reviewed"]) {
    $(id).addEventListener("change", () => { state.page = 1; loadList(); });
  }
  $("#filters").addEventListener("reset", () => setTimeout(() => { state.page = 1; loadList(); }, 0));
  $("#f-shift").addEventListener("click", async () => {
    await loadConfig();
    $("#f-since").value = toLocalInput(state.config.shift_start);
    $("#f-until").value = "";
    state.page = 1;
    loadList();
  });
  document.addEventListener("keydown", onKey);
  setInterval(renderStations, 1000);
  setInterval(() => loadConfig().then(loadStats).catch(() => {}), 60000);  // shift change
  reloadAll().catch((e) => ($("#msg").textContent = e.message));
  connect();
}

document.addEventListener("DOMContentLoaded", init);
