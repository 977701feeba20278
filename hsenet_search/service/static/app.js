// The viewer: search (text, scan upload, label chips), result grid, case view; state lives in the URL.
import { api, ApiError, setToken, sliceSrc } from "/static/api.js";
import { highlightSentences } from "/static/highlight.js";

const LABELS = [
  "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
  "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
  "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion", "Mosaic attenuation pattern",
  "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
];
const K = 24;
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

// ------------------------------------------------------------------ URL state
function readState() {
  const p = new URLSearchParams(location.search);
  return {
    q: p.get("q") || "",
    labels: (p.get("labels") || "").split(",").filter((l) => LABELS.includes(l)),
    index: p.get("index") || "",
    like: p.get("like") || "",
    case: p.get("case") || "",
  };
}

function writeState(state, push = true) {
  const p = new URLSearchParams();
  for (const key of ["q", "like", "index", "case"]) if (state[key]) p.set(key, state[key]);
  if (state.labels.length) p.set("labels", state.labels.join(","));
  const url = `${location.pathname}${p.toString() ? "?" + p : ""}`;
  if (url !== location.pathname + location.search) history[push ? "pushState" : "replaceState"](null, "", url);
}

let state = readState();
let indexes = [];

// k never exceeds the number of scans of the chosen index (the engine refuses a larger k)
function kFor(wanted = K) {
  const ix = indexes.find((i) => i.name === state.index);
  return ix ? Math.max(1, Math.min(wanted, ix.counts.scans ?? ix.counts.volumes)) : wanted;
}
let pendingRetry = null;

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function guarded(work) {
  try {
    await work();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      pendingRetry = work;
      $("token-form").hidden = false;
      $("token").focus();
      status(err.message, true);
    } else {
      status(err.message || String(err), true);
    }
  }
}

// ------------------------------------------------------------------ label chips
function renderChips() {
  const nav = $("chips");
  nav.replaceChildren(...LABELS.map((label) => {
    const on = state.labels.includes(label);
    const chip = el("button", { type: "button", className: "chip", textContent: label });
    chip.dataset.label = label;
    chip.setAttribute("aria-pressed", String(on));
    chip.addEventListener("click", () => {
      state.labels = on ? state.labels.filter((l) => l !== label) : [...state.labels, label];
      state.case = "";
      writeState(state);
      render();
    });
    return chip;
  }));
}

// ------------------------------------------------------------------ results
function card(hit) {
  const img = el("img", { alt: `Mid axial slice of ${hit.scan_id}`, className: "thumb", loading: "lazy" });
  sliceSrc(hit.scan_id, { size: 192, window: "lung", index_name: state.index }).then((src) => { img.src = src; });
  const labels = el("span", { className: "labels", textContent: hit.labels.join(", ") || "no labelled finding" });
  const link = el("a", { className: "card", href: caseUrl(hit.scan_id) },
    img,
    el("span", { className: "card-head" },
      el("strong", { textContent: hit.scan_id }), el("span", { className: "score", textContent: hit.score.toFixed(3) })),
    labels,
    el("span", { className: "impression", textContent: hit.impression || hit.findings }));
  link.dataset.scan = hit.scan_id;
  link.addEventListener("click", (event) => {
    if (event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    openCase(hit.scan_id);
  });
  return link;
}

function caseUrl(scanId) {
  const p = new URLSearchParams(location.search);
  p.set("case", scanId);
  return `${location.pathname}?${p}`;
}

function showResults(result, title) {
  const hits = result.hits;
  $("results").replaceChildren(
    el("h2", { className: "results-title", textContent: `${title} — ${hits.length} case${hits.length === 1 ? "" : "s"}` }),
    el("div", { className: "grid" }, ...hits.map(card)));
  status(hits.length ? "" : "No case matches this filter.");
}

async function runSearch() {
  const labels = state.labels;
  if (state.like) {
    status(`Finding cases like ${state.like}…`);
    showResults(await api.searchCase({ case: state.like, k: kFor(), labels, index: state.index || null }),
      `Cases like ${state.like}`);
  } else if (state.q) {
    status("Searching…");
    showResults(await api.searchText({ text: state.q, k: kFor(), labels, index: state.index || null }),
      `“${state.q}”`);
  } else {
    $("results").replaceChildren(el("p", { className: "hint",
      textContent: "Search by findings text or upload a scan (.nii, .nii.gz, .npy or a zip of a DICOM series)." }));
    status("");
  }
}

async function uploadSearch(file) {
  status(`Uploading ${file.name}…`);
  Object.assign(state, { q: "", like: "", case: "" });
  writeState(state);
  $("q").value = "";
  showCaseView(false);
  showResults(await api.searchUpload(file, { k: kFor(), labels: state.labels, index: state.index || undefined }),
    `Cases like ${file.name}`);
}

// ------------------------------------------------------------------ case view
const view = { scanId: "", info: null, volume: 0, axis: "axial", window: "lung", index: {} };

function showCaseView(open) {
  $("case-view").hidden = !open;
  $("results").hidden = open;
}

async function openCase(scanId, push = true) {
  state.case = scanId;
  writeState(state, push);
  await guarded(() => loadCase(scanId));
}

async function loadCase(scanId) {
  status(`Opening ${scanId}…`);
  const info = await api.caseInfo(scanId, state.index);
  Object.assign(view, { scanId, info, volume: 0, axis: "axial", index: {} });
  $("case-title").textContent = `${scanId}`;
  $("case-labels").textContent = info.labels.join(", ") || "no labelled finding";
  $("case-findings").replaceChildren(...highlightSentences(info.findings, state.q));
  $("case-impression").replaceChildren(...highlightSentences(info.impression, state.q));
  $("reports-out").hidden = true;
  $("draft-out").hidden = true;
  $("where").hidden = true;
  showCaseView(true);
  const ix = indexes.find((i) => i.name === state.index);
  if (state.q && ix && ix.localisation) await showWhere(scanId, state.q);
  await drawSlice();
  $("slice-frame").focus();
  status("");
}

// Where the search text is in this scan (a model with a localisation head): open that slice, show the profile.
async function showWhere(scanId, text) {
  const where = await api.locate(scanId, text, state.index);
  const shown = view.info.volumes.findIndex((v) => v.volume_name === where.volume_name);
  if (shown >= 0) view.volume = shown;
  if (where.axial_index !== null) view.index.axial = where.axial_index;
  const top = Math.max(...where.profile);
  const bars = el("div", { className: "profile", title: "match per depth bin (foot → head)" },
    ...where.profile.map((p) => el("span", { className: "bar", style: `height:${Math.round(100 * p / top)}%` })));
  $("where").replaceChildren(
    el("span", { textContent: `Best match: image ${where.image_number} (${where.z_mm.toFixed(0)} mm), ` +
      `confidence ${(100 * where.confidence).toFixed(0)} %` }), bars);
  $("where").hidden = false;
}

function slices() {
  return view.info.volumes[view.volume].slices[view.axis];
}

async function drawSlice() {
  const count = slices();
  const i = Math.min(count - 1, Math.max(0, view.index[view.axis] ?? Math.floor(count / 2)));
  view.index[view.axis] = i;
  const range = $("slice-index");
  range.max = String(count - 1);
  range.value = String(i);
  $("slice-label").textContent = `${i + 1} / ${count}`;
  for (const b of document.querySelectorAll("[data-axis]")) b.setAttribute("aria-pressed", String(b.dataset.axis === view.axis));
  for (const b of document.querySelectorAll("[data-window]")) b.setAttribute("aria-pressed", String(b.dataset.window === view.window));
  const img = $("slice-img");
  const src = await sliceSrc(view.scanId, { axis: view.axis, index: i, window: view.window,
    volume: view.info.volumes[view.volume].volume_name, index_name: state.index });
  img.dataset.slice = String(i);
  img.alt = `${view.axis} slice ${i + 1} of ${count}, ${view.window} window`;
  img.src = src;
}

function step(delta) {
  view.index[view.axis] = (view.index[view.axis] ?? 0) + delta;
  guarded(drawSlice);
}

function renderReports(result) {
  const out = $("reports-out");
  out.replaceChildren(el("h3", { textContent: "Closest reports" }),
    ...result.hits.map((h) => el("article", { className: "report-hit" },
      el("a", { href: caseUrl(h.scan_id), textContent: `${h.scan_id} · ${h.score.toFixed(3)}` }),
      el("p", { textContent: h.impression || h.findings }))));
  for (const a of out.querySelectorAll("a")) {
    a.addEventListener("click", (event) => { event.preventDefault(); openCase(new URLSearchParams(a.search).get("case")); });
  }
  out.hidden = false;
}

function renderDraft(draft) {
  const cites = el("p", { className: "cites" }, "Grounded in: ");
  draft.retrieved.forEach((id, n) => {
    const a = el("a", { href: caseUrl(id), textContent: id });
    a.addEventListener("click", (event) => { event.preventDefault(); openCase(id); });
    cites.append(...(n ? [", ", a] : [a]));
  });
  const out = $("draft-out");
  out.replaceChildren(el("h3", { textContent: `Draft report (${draft.mode})` }),
    el("h4", { textContent: "Findings" }), el("p", { textContent: draft.findings }),
    el("h4", { textContent: "Impression" }), el("p", { textContent: draft.impression }), cites,
    ...draft.warnings.map((w) => el("p", { className: "warning", textContent: w })));
  out.hidden = false;
}

// ------------------------------------------------------------------ wiring
async function render() {
  $("q").value = state.q;
  renderChips();
  if (state.case) {
    await guarded(() => loadCase(state.case));
    guarded(runSearch);
  } else {
    showCaseView(false);
    await guarded(runSearch);
  }
}

async function loadIndexes() {
  ({ indexes } = await api.indexes());
  const select = $("index-select");
  select.replaceChildren(...indexes.map((ix) =>
    el("option", { value: ix.name, textContent: `${ix.name} (${ix.counts.scans ?? ix.counts.volumes} scans)` })));
  if (!state.index && indexes.length) state.index = indexes[0].name;
  select.value = state.index;
}

function wire() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(state, { q: $("q").value.trim(), like: "", case: "" });
    writeState(state);
    render();
  });
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (file) guarded(() => uploadSearch(file));
  });
  $("index-select").addEventListener("change", () => {
    Object.assign(state, { index: $("index-select").value, case: "" });
    writeState(state);
    render();
  });
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken($("token").value);
    $("token-form").hidden = true;
    status("");
    await guarded(loadIndexes);
    if (pendingRetry) { const retry = pendingRetry; pendingRetry = null; await guarded(retry); }
    render();
  });
  $("back-btn").addEventListener("click", () => {
    state.case = "";
    writeState(state);
    showCaseView(false);
    if (!$("results").children.length) guarded(runSearch);
  });
  $("slice-index").addEventListener("input", () => {
    view.index[view.axis] = Number($("slice-index").value);
    guarded(drawSlice);
  });
  $("slice-frame").addEventListener("wheel", (event) => {
    event.preventDefault();
    step(event.deltaY > 0 ? 1 : -1);
  }, { passive: false });
  $("slice-frame").addEventListener("keydown", (event) => {
    const deltas = { ArrowUp: -1, ArrowDown: 1, ArrowLeft: -1, ArrowRight: 1, PageUp: -10, PageDown: 10 };
    if (event.key in deltas) { event.preventDefault(); step(deltas[event.key]); }
    if (event.key === "Home") { event.preventDefault(); view.index[view.axis] = 0; guarded(drawSlice); }
    if (event.key === "End") { event.preventDefault(); view.index[view.axis] = slices() - 1; guarded(drawSlice); }
  });
  for (const b of document.querySelectorAll("[data-axis]")) {
    b.addEventListener("click", () => { view.axis = b.dataset.axis; guarded(drawSlice); });
  }
  for (const b of document.querySelectorAll("[data-window]")) {
    b.addEventListener("click", () => { view.window = b.dataset.window; guarded(drawSlice); });
  }
  $("more-like-this").addEventListener("click", () => {
    Object.assign(state, { like: view.scanId, q: "", case: "" });
    writeState(state);
    render();
  });
  $("closest-reports").addEventListener("click", () => guarded(async () => {
    status("Finding the closest reports…");
    renderReports(await api.searchCase({ case: view.scanId, k: kFor(5), target: "reports", index: state.index || null }));
    status("");
  }));
  $("draft-btn").addEventListener("click", () => guarded(async () => {
    status("Drafting a report from the most similar cases…");
    renderDraft(await api.generate({ case: view.scanId, k: kFor(5), mode: $("draft-mode").value, index: state.index || null }));
    status("");
  }));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("case-view").hidden) $("back-btn").click();
  });
  window.addEventListener("popstate", () => { state = readState(); render(); });
}

wire();
guarded(loadIndexes).then(render);
