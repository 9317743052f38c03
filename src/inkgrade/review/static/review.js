// Keyboard review of one question across all students; every change goes to the server at once.
"use strict";

const cfg = window.INKGRADE;
const $ = (id) => document.getElementById(id);
const state = {items: [], index: 0, zoom: 1, pageZoom: 1};
const DONE = new Set(["reviewed", "auto"]);

function fmt(p) {
  return p === null || p === undefined ? "–" : String(Math.round(p * 1000) / 1000);
}

function flash(text, kind) {
  const el = $("flash");
  el.textContent = text;
  el.className = "flash" + (kind ? " " + kind : "");
}

function chips(el, concepts, kind) {
  el.replaceChildren();
  if (!concepts.length) {
    const li = document.createElement("li");
    li.className = "chip none";
    li.textContent = "none";
    el.appendChild(li);
  }
  for (const c of concepts) {
    const li = document.createElement("li");
    li.className = "chip " + kind;
    li.textContent = c.label;
    if (c.span) li.title = "“" + c.span + "”";
    el.appendChild(li);
  }
}

function renderQueue() {
  const list = $("queue");
  list.replaceChildren();
  state.items.forEach((item, i) => {
    const li = document.createElement("li");
    li.className = "q-item status-" + item.status + (i === state.index ? " current" : "");
    li.dataset.answer = item.answer_id;
    const shown = item.points !== null ? item.points : item.ai_points;
    li.innerHTML = '<span class="dot"></span><span class="sid"></span>' +
      '<span class="riskbar"><span></span></span><span class="pts num"></span>';
    li.querySelector(".sid").textContent = item.student_id;
    li.querySelector(".riskbar span").style.width = Math.round(100 * item.risk) + "%";
    li.querySelector(".pts").textContent = fmt(shown);
    li.querySelector(".pts").title = item.points !== null ? "reviewed points" : "AI points";
    li.addEventListener("click", () => show(i));
    list.appendChild(li);
  });
  const done = state.items.filter((it) => DONE.has(it.status)).length;
  $("progress-text").textContent = done + " / " + state.items.length;
  $("progress-bar").style.width = (state.items.length ? 100 * done / state.items.length : 0) + "%";
  const current = list.children[state.index];
  if (current) current.scrollIntoView({block: "nearest"});
}

function show(i) {
  if (!state.items.length) {
    flash("No answers for this question.", "warn");
    return;
  }
  state.index = Math.max(0, Math.min(i, state.items.length - 1));
  const item = state.items[state.index];
  $("student").textContent = "Student " + item.student_id;
  $("position").textContent = (state.index + 1) + " of " + state.items.length;
  const status = $("status");
  status.textContent = item.status;
  status.className = "chip status-" + item.status;
  $("risk").textContent = "risk " + item.risk.toFixed(2);
  $("risk").className = "risk " + (item.risk >= 0.66 ? "high" : item.risk >= 0.33 ? "mid" : "low");
  $("reason").textContent = item.risk_reason || "";
  $("reason").hidden = !item.risk_reason;
  const crop = $("crop");
  if (item.crop_url) {
    crop.onload = applyZoom;
    crop.src = item.crop_url;
    crop.hidden = false;
  } else {
    crop.removeAttribute("src");
    crop.hidden = true;
  }
  applyZoom();
  $("transcription").textContent = item.transcription || "(nothing written)";
  $("transcription").classList.toggle("empty", !item.transcription);
  $("ai-points").textContent = fmt(item.ai_points);
  $("points-now").textContent = fmt(item.points);
  chips($("matched"), item.matched, "ok");
  chips($("missing"), item.missing, "miss");
  $("justification").textContent = item.justification || "–";
  const input = $("points");
  input.value = fmt(item.points !== null ? item.points : item.ai_points).replace("–", "");
  input.focus();
  input.select();
  renderQueue();
  showHistory(item.answer_id);
  if ($("page-view").hidden === false) openPage();
}

async function showHistory(answerId) {
  const res = await fetch("/api/audit?answer_id=" + encodeURIComponent(answerId));
  const rows = res.ok ? await res.json() : [];
  if (state.items[state.index].answer_id !== answerId) return;  // moved on meanwhile
  const list = $("history");
  list.replaceChildren();
  for (const row of rows.slice().reverse()) {
    const li = document.createElement("li");
    li.textContent = row.at.replace("T", " ") + " · " + row.who + " · " + fmt(row.old_points) + " → " +
      fmt(row.new_points) + " (" + row.new_status + ")";
    list.appendChild(li);
  }
  $("history-box").hidden = rows.length === 0;
}

function applyZoom() {
  const crop = $("crop");
  const zoomed = state.zoom !== 1 && crop.naturalWidth > 0;
  $("crop-wrap").classList.toggle("zoomed", zoomed);
  crop.style.width = zoomed ? Math.round(crop.naturalWidth * state.zoom) + "px" : "";
  const pageImage = $("page-image");
  pageImage.style.width = pageImage.naturalWidth ? Math.round(pageImage.naturalWidth * state.pageZoom) + "px" : "";
}

function nextUnreviewed(from) {
  const n = state.items.length;
  for (const wanted of ["unreviewed", "skipped"]) {
    for (let k = 1; k <= n; k++) {
      const j = (from + k) % n;
      if (state.items[j].status === wanted && j !== from) return j;
    }
  }
  return -1;
}

function advance() {
  const j = nextUnreviewed(state.index);
  if (j >= 0) {
    show(j);
  } else {
    show(state.index);
    flash("All answers to " + cfg.question + " are reviewed. Press ] for the next question.", "ok");
  }
}

async function send(body) {
  const item = state.items[state.index];
  const res = await fetch("/api/items/" + encodeURIComponent(item.answer_id), {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({...body, version: item.version}),
  });
  const data = await res.json();
  if (res.ok) {
    state.items[state.index] = data;
    return true;
  }
  if (res.status === 409) {
    state.items[state.index] = data.detail.current;
    show(state.index);
    flash("Changed by someone else in the meantime; reloaded. Check it and press Enter again.", "warn");
  } else {
    flash(typeof data.detail === "string" ? data.detail : "not saved (" + res.status + ")", "error");
  }
  return false;
}

async function accept(points) {
  if (points === "" || isNaN(Number(points))) {
    flash("Type the points first.", "error");
    return;
  }
  if (await send({points: Number(points)})) {
    flash("Saved " + fmt(Number(points)) + " for " + state.items[state.index].student_id + ".", "ok");
    advance();
  }
}

async function skip() {
  if (await send({status: "skipped"})) {
    flash("Skipped " + state.items[state.index].student_id + ".", "");
    advance();
  }
}

function openPage() {
  const item = state.items[state.index];
  if (!item || !item.page_url) {
    flash("No page image for this answer.", "warn");
    return;
  }
  $("page-image").src = item.page_url;
  $("page-title").textContent = "Student " + item.student_id + " · whole page";
  $("page-view").hidden = false;
  $("page-image").onload = applyZoom;
}

function togglePage() {
  if ($("page-view").hidden) openPage();
  else $("page-view").hidden = true;
}

function zoom(factor) {
  if ($("page-view").hidden) state.zoom = Math.min(4, Math.max(0.25, state.zoom * factor));
  else state.pageZoom = Math.min(4, Math.max(0.25, state.pageZoom * factor));
  applyZoom();
}

function goQuestion(step) {
  const k = cfg.questions.indexOf(cfg.question) + step;
  if (k >= 0 && k < cfg.questions.length) location.href = "/review/" + encodeURIComponent(cfg.questions[k]);
}

const KEYS = {
  z: () => accept(0),
  f: () => accept(cfg.max),
  s: skip,
  n: () => {
    const j = nextUnreviewed(state.index);
    if (j >= 0) show(j); else flash("Nothing left to review here.", "ok");
  },
  p: () => show(state.index - 1),
  ArrowUp: () => show(state.index - 1),
  ArrowDown: () => show(state.index + 1),
  w: togglePage,
  Escape: () => { $("page-view").hidden = true; },
  "+": () => zoom(1.25),
  "=": () => zoom(1.25),
  "-": () => zoom(0.8),
  "[": () => goQuestion(-1),
  "]": () => goQuestion(1),
};

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  if (key === "Enter") {
    ev.preventDefault();
    accept($("points").value.trim());
    return;
  }
  if (KEYS[key]) {
    ev.preventDefault();
    KEYS[key]();
    return;
  }
  if (/^[0-9.,]$/.test(key) && document.activeElement !== $("points")) {
    $("points").focus();  // the typed digit lands in the field
  } else if (key.length === 1 && !/^[0-9.,]$/.test(key)) {
    ev.preventDefault();  // letters are shortcuts, never part of the points
  }
});

$("points-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  accept($("points").value.trim());
});
$("points").addEventListener("input", (ev) => { ev.target.value = ev.target.value.replace(",", "."); });

fetch("/api/items?question=" + encodeURIComponent(cfg.question))
  .then((res) => res.json())
  .then((items) => {
    state.items = items;
    const first = items.findIndex((it) => it.status === "unreviewed");
    show(first >= 0 ? first : 0);
  });
