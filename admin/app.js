// Raiox review page: plain browser JavaScript over the approve API (no build step, no dependencies).
"use strict";

// The approve function serves this page at …/approve/admin/index.html, so its API is the folder above: same
// origin, nothing to configure per deployment.
const API = new URL("..", window.location.href).pathname.replace(/\/+$/, "");
const PAGE_SIZE = 50;
const REFRESH_MS = 30000;
const QUICK_REASONS = ["X-ray too blurred to identify", "No implant visible", "Implant system not in the catalog",
  "Several implants: send one X-ray per implant"];
const STATUS_LABELS = [["ready", "Ready"], ["processing", "Processing"], ["approved", "Approved"],
  ["rejected", "Rejected"], ["notified", "Delivered"], ["failed", "Failed"]];
const DELIVERY_LABELS = {queued: "Delivery queued", sending: "Sending", retrying: "Retrying delivery",
  delivered: "Delivered", failed: "Delivery failed", none: "Not queued"};
// The side lists: which statuses each shows and what it says when empty.
const TABS = {
  queue: {status: "ready", empty: "The queue is empty. New X-rays appear here when they are ready."},
  attention: {status: "failed", empty: "Nothing needs attention: every case got through intake."},
  decided: {status: "decided", empty: "No decisions yet."},
};
const HISTORY_LABELS = {"case.viewed": "opened the case and its X-rays", "case.approved": "approved",
  "case.rejected": "rejected", "case.redeliver": "queued the delivery again", "case.retry": "retried intake",
  "case.erased": "erased the patient data", "case.fetched": "fetched the X-rays", "fetch_failed": "gave up fetching"};

const state = {
  token: sessionStorage.getItem("raiox.token"),
  name: sessionStorage.getItem("raiox.name"),
  tab: "queue",
  cases: [],
  total: 0,
  page: 1,
  current: null,      // the open case's detail
  imageIndex: 0,
  rank: 1,
  override: null,     // implant picked from the catalog
  panel: null,        // "override" | "reject" | null
  note: "",
  compare: false,     // the chosen candidate's reference beside the X-ray
  reason: "",
  busy: false,
  historyOpen: false, // the case's access history is unfolded
  erasing: false,     // the erase confirmation is open
  system: null,       // the last GET /status
};

const $ = (id) => document.getElementById(id);

// Builds an element; strings become text nodes, so data from submitters is never parsed as HTML.
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replaces a node's children; like h(), it leaves out null, undefined and false.
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
}

// API ----------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit"});
  } catch (error) {
    throw new ApiError(0, `Cannot reach the approve API (${API}). Check the connection and try again.`);
  }
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  if (!response.ok) {
    let message = data && data.error ? sentence(data.error) : `The server answered HTTP ${response.status}.`;
    if (response.status >= 500 && response.status !== 503) message = "The server had a problem; it has been logged. Try again.";
    if (response.status === 401 && path !== "/login") {
      signOut(`Your session has ended (${message.replace(/\.$/, "")}). Please sign in again.`);
    }
    throw new ApiError(response.status, message);
  }
  return data;
}

// Messages -----------------------------------------------------------------------------------------

let messageTimer = null;

function showMessage(text, kind = "error") {
  const box = $("message");
  clearTimeout(messageTimer);
  box.replaceChildren(h("span", {}, text), h("button", {class: "link dismiss", type: "button",
    "aria-label": "Dismiss", onclick: hideMessage}, "×"));
  box.className = `message ${kind}`;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  box.hidden = false;
  if (kind !== "error") messageTimer = setTimeout(hideMessage, 6000);
}

function hideMessage() {
  $("message").hidden = true;
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) return;  // signOut already explained it
  showMessage(error.message || String(error));
}

// Formatting ---------------------------------------------------------------------------------------

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? `today ${date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"})}`
    : date.toLocaleString([], {day: "numeric", month: "short", hour: "2-digit", minute: "2-digit"});
}

const sentence = (text) => String(text).charAt(0).toUpperCase() + String(text).slice(1);
const similarity = (value) => Number(value).toFixed(3);
const implantName = (item) => `${item.manufacturer} ${item.system}`;

// Sign-in ------------------------------------------------------------------------------------------

function showLogin(message) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("login-password").value = "";
  (($("login-name").value && $("login-password")) || $("login-name")).focus();
}

async function signIn(event) {
  event.preventDefault();
  const button = $("login-submit");
  button.disabled = true;
  $("login-error").hidden = true;
  try {
    const answer = await api("POST", "/login", {name: $("login-name").value.trim(), password: $("login-password").value});
    state.token = answer.token;
    state.name = answer.name;
    sessionStorage.setItem("raiox.token", answer.token);
    sessionStorage.setItem("raiox.name", answer.name);
    $("login-password").value = "";
    await showApp();
  } catch (error) {
    $("login-error").textContent = error.message;
    $("login-error").hidden = false;
    $("login-password").select();
  } finally {
    button.disabled = false;
  }
}

// Ends every session of this reviewer on the server (older tokens, copied ones included, stop working), then here.
async function logOut() {
  let message = null;
  try {
    await api("POST", "/logout");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;  // already signed out, and told why
    message = `Signed out on this device only: ${error.message.replace(/\.$/, "")}. Sessions elsewhere may still be open.`;
  }
  signOut(message);
}

function signOut(message) {
  state.token = null;
  state.current = null;
  state.system = null;
  $("system-panel").hidden = true;
  sessionStorage.removeItem("raiox.token");
  sessionStorage.removeItem("raiox.name");
  showLogin(message);
}

async function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("who-name").textContent = state.name || "";
  selectTab("queue");
  loadSystem().catch(failed);
  await loadList({openFirst: true});
}

// The case list ------------------------------------------------------------------------------------

function selectTab(tab) {
  state.tab = tab;
  for (const name of Object.keys(TABS)) $(`tab-${name}`).setAttribute("aria-selected", String(tab === name));
}

async function loadList({openFirst = false, append = false} = {}) {
  const page = append ? state.page + 1 : 1;
  const data = await api("GET", `/cases?status=${TABS[state.tab].status}&page=${page}&per_page=${PAGE_SIZE}`);
  state.page = page;
  state.cases = append ? state.cases.concat(data.cases) : data.cases;
  state.total = data.total;
  renderCounts(data.counts);
  renderList();
  if (openFirst && state.cases.length && !state.current) await openCase(state.cases[0].id);
}

function renderCounts(counts) {
  const merged = {...counts, processing: (counts.received || 0) + (counts.embedding || 0)};
  $("counts").replaceChildren(...STATUS_LABELS.map(([key, label]) =>
    h("li", {class: `count ${key}${merged[key] ? "" : " zero"}`, dataset: {status: key}},
      h("span", {class: "count-n"}, merged[key] || 0), " ", label)));
  $("queue-count").textContent = counts.ready || 0;
  $("attention-count").textContent = counts.failed || 0;
  $("attention-count").classList.toggle("alert", Boolean(counts.failed));
}

function renderList() {
  const list = $("case-list");
  list.replaceChildren(...state.cases.map((item) => {
    const open = state.current && state.current.case.id === item.id;
    const lines = [h("div", {class: "row-top"},
      h("span", {class: "case-id"}, `#${item.id}`),
      h("span", {class: "case-name"}, item.submitter_name || item.client_id || "No name"),
      h("span", {class: "case-when"}, when(item.decision ? item.decision.decided_at : item.created_at)))];
    if (item.decision) {
      const outcome = item.decision.decision === "approved"
        ? `${implantName(item.decision)}` : (item.decision.reason || "Rejected");
      lines.push(h("div", {class: "row-sub"},
        h("span", {class: `badge ${item.decision.decision}`}, item.decision.decision === "approved" ? "Approved" : "Rejected"),
        h("span", {class: "row-text"}, outcome)));
      if (item.delivery) {
        lines.push(h("div", {class: "row-sub"},
          h("span", {class: `delivery ${item.delivery.state}`}, DELIVERY_LABELS[item.delivery.state] || item.delivery.state)));
      }
    } else if (item.status === "failed") {
      lines.push(h("div", {class: "row-sub"}, h("span", {class: "badge failed"}, "Failed"),
        h("span", {class: "row-text row-error", title: item.error || ""}, item.error || "No reason recorded")));
    } else if (item.top) {
      lines.push(h("div", {class: "row-sub"},
        h("span", {class: "row-text"}, implantName(item.top)),
        h("span", {class: "row-sim"}, similarity(item.top.similarity))));
    } else {
      lines.push(h("div", {class: "row-sub muted"}, "No candidates"));
    }
    return h("li", {},
      h("button", {type: "button", class: `case-row${open ? " open" : ""}`, dataset: {caseId: item.id},
        "aria-current": open ? "true" : null, onclick: () => openCase(item.id).catch(failed)}, lines));
  }));
  const empty = $("list-empty");
  empty.hidden = state.cases.length > 0;
  empty.textContent = TABS[state.tab].empty;
  $("load-more").hidden = state.cases.length >= state.total;
}

// The case view ------------------------------------------------------------------------------------

let openSeq = 0;

// Opens (or refreshes) a case. Reopening the case on screen keeps the reviewer's picks, panel and text.
async function openCase(caseId) {
  const seq = ++openSeq;
  const detail = await api("GET", `/cases/${caseId}`);
  if (seq !== openSeq) return;  // a later click won
  const previous = state.current;
  const same = previous && previous.case.id === caseId && Boolean(previous.decision) === Boolean(detail.decision);
  state.current = detail;
  if (!same) {
    state.imageIndex = Math.max(0, detail.images.findIndex((image) => image.candidates.length));
    state.rank = 1;
    state.override = null;
    state.panel = null;
    state.note = "";
    state.reason = "";
    state.erasing = false;
  }
  renderCase();
  renderList();
}

function currentImage() {
  return state.current.images[state.imageIndex] || {candidates: []};
}

function renderCase() {
  const detail = state.current;
  $("no-case").hidden = true;
  const view = $("case-view");
  view.hidden = false;
  const item = detail.case;
  const decided = Boolean(detail.decision);
  const meta = [item.submitter_name, item.client_id && `client ${item.client_id}`,
    `submission ${item.submission_id}`, `received ${when(item.created_at)}`].filter(Boolean).join(" · ");
  let next;
  if (decided) next = renderDecision();
  else if (item.status === "ready") next = renderActions();
  else if (item.status === "failed") next = renderAttention();
  else next = h("p", {class: "muted in-progress"}, `This case is ${item.status}: its candidates appear when it is ready.`);
  fill(view,
    h("div", {class: "case-head"},
      h("div", {}, h("h2", {}, `Case #${item.id}`), h("p", {class: "muted"}, meta)),
      h("span", {class: "badges"}, item.erased_at ? h("span", {class: "badge big erased"}, "erased") : null,
        h("span", {class: `badge big ${item.status}`}, item.status))),
    item.erased_at ? h("p", {class: "erased-note", role: "note"}, `Patient data erased ${when(item.erased_at)}: `
      + "the X-rays, the submitter's details and free texts are gone; the decision stays, anonymous.") : null,
    h("div", {class: "case-body"}, renderXray(), h("div", {class: "decide"},
      renderCandidates(decided), next, renderRecord())));
}

// A case whose intake failed for good: the reason, and a retry.
function renderAttention() {
  const item = state.current.case;
  return h("div", {class: "attention-card"},
    h("p", {}, h("strong", {}, "Intake failed: "), item.error || "no reason recorded"),
    h("p", {class: "muted small"}, "Retry fetches its failed X-rays again (those sent as links) and embeds the case."),
    h("button", {id: "retry-case", type: "button", class: "primary", onclick: () => retryCase().catch(failed)},
      "Retry intake"));
}

async function retryCase() {
  const caseId = state.current.case.id;
  $("retry-case").disabled = true;
  try {
    const answer = await api("POST", `/cases/${caseId}/retry`);
    showMessage(`Case #${caseId} went back to intake (${answer.images_reopened} X-ray(s) to fetch again).`, "success");
  } finally {
    await loadList();
    await openCase(caseId);
  }
}

// The access history and the erasure: what is kept about the case, and removing it.
function renderRecord() {
  const detail = state.current;
  const history = detail.history || [];
  const trail = h("details", {class: "history", open: state.historyOpen,
    ontoggle: (event) => { state.historyOpen = event.target.open; }},
    h("summary", {}, `Access history (${history.length})`),
    h("ol", {class: "history-list"}, history.slice().reverse().map((entry) =>
      h("li", {}, h("span", {class: "history-when"}, when(entry.at)), " ", h("strong", {}, entry.actor), " ",
        HISTORY_LABELS[entry.action] || entry.action))));
  if (detail.case.erased_at) return h("div", {class: "record"}, trail);
  return h("div", {class: "record"}, trail, state.erasing ? renderErasePanel()
    : h("button", {id: "erase-open", type: "button", class: "link danger-link",
      onclick: () => { state.erasing = true; renderCase(); }}, "Erase patient data…"));
}

function renderErasePanel() {
  const caseId = state.current.case.id;
  const confirm = h("button", {id: "erase-confirm", type: "button", class: "danger", disabled: true,
    onclick: () => eraseCase(Number(input.value.trim())).catch(failed)}, "Erase for good");
  const input = h("input", {id: "erase-confirm-input", inputmode: "numeric", autocomplete: "off",
    "aria-describedby": "erase-explain",
    oninput: (event) => { confirm.disabled = event.target.value.trim() !== String(caseId); },
    onkeydown: (event) => { if (event.key === "Enter" && !confirm.disabled) confirm.click(); }});
  setTimeout(() => input.focus(), 0);
  return h("div", {class: "panel reject erase-panel"},
    h("p", {id: "erase-explain"}, "Removes this case's X-rays from storage and the submitter's name, email and "
      + "client id, notes and reasons from the database, and any reference learned from it. The decision stays, "
      + "anonymous, and so does this history. It cannot be undone."),
    h("label", {class: "field"}, `Type the case number (${caseId}) to confirm`, input),
    h("div", {class: "panel-actions"}, confirm,
      h("button", {type: "button", class: "link", onclick: () => { state.erasing = false; renderCase(); }},
        "Cancel (Esc)")));
}

async function eraseCase(confirm) {
  const caseId = state.current.case.id;
  $("erase-confirm").disabled = true;
  try {
    const answer = await api("POST", `/cases/${caseId}/erase`, {confirm});
    state.erasing = false;
    showMessage(`Case #${caseId} erased: ${answer.objects_deleted} file(s) deleted from storage.`, "success");
  } finally {
    await loadList();
    await openCase(caseId);
  }
}

function renderXray() {
  const images = state.current.images;
  const image = currentImage();
  const tabs = images.length > 1 ? h("div", {class: "image-tabs"}, images.map((img, index) =>
    h("button", {type: "button", class: index === state.imageIndex ? "on" : "",
      onclick: () => { state.imageIndex = index; state.rank = 1; renderCase(); }}, `X-ray ${index + 1}`))) : null;
  let body;
  const reference = chosenCandidate();
  if (!images.length) body = h("p", {class: "xray-missing"}, "This case has no X-ray.");
  else if (!image.url) body = h("p", {class: "xray-missing"}, `This X-ray could not be stored: ${image.error || "unknown error"}`);
  else {
    body = h("img", {src: image.url, alt: `X-ray ${state.imageIndex + 1} of case ${state.current.case.id}`,
      onerror: (event) => event.target.replaceWith(h("p", {class: "xray-missing"},
        "The X-ray did not load (its link may have expired). Reopen the case to get a fresh link."))});
    if (state.compare && reference && reference.reference_url) {
      body = h("div", {class: "compare"},
        h("div", {class: "pane"}, body, h("span", {class: "pane-label"}, "Case X-ray")),
        h("div", {class: "pane"}, h("img", {src: reference.reference_url, alt: `Reference X-ray of ${implantName(reference)}`}),
          h("span", {class: "pane-label"}, `Reference · ${implantName(reference)}`)));
    }
  }
  const caption = images.length ? [`X-ray ${state.imageIndex + 1} of ${images.length}`,
    image.width && `${image.width} × ${image.height} px`, image.status === "failed" && `not readable: ${image.error}`]
    .filter(Boolean).join(" · ") : "";
  return h("figure", {class: "xray"}, tabs, h("div", {class: "xray-frame"}, body),
    h("figcaption", {}, h("span", {}, caption), h("span", {class: "fig-actions"},
      reference && reference.reference_url ? h("button", {id: "compare", type: "button", class: `link${state.compare ? " on" : ""}`,
        onclick: toggleCompare}, state.compare ? "Hide reference (C)" : "Compare with reference (C)") : null,
      image.url ? h("a", {href: image.url, target: "_blank", rel: "noopener noreferrer"}, "Open full size") : null)));
}

function renderCandidates(decided) {
  const candidates = currentImage().candidates;
  if (!candidates.length) {
    return state.current.case.status === "ready" && !decided ? h("div", {class: "candidates-empty"},
      "No candidates for this X-ray. Pick an implant from the catalog or reject.") : null;
  }
  const chosenRank = decided && state.current.decision.chosen_rank;
  return h("div", {},
    h("h3", {class: "section-title"}, decided ? "Candidates" : "Candidates — pick the implant you see"),
    currentImage().low_confidence
      ? h("p", {class: "low-confidence", role: "note"},
          "Low confidence: the best candidates are close together. Compare carefully before approving.")
      : null,
    h("ol", {class: "candidates"}, candidates.map((candidate) => {
      const selected = decided ? candidate.rank === chosenRank : !state.override && candidate.rank === state.rank;
      return h("li", {},
        h("button", {type: "button", class: `candidate${selected ? " selected" : ""}`, disabled: decided,
          dataset: {rank: candidate.rank}, "aria-pressed": String(selected),
          onclick: () => pick(candidate.rank)},
          h("span", {class: "key"}, candidate.rank),
          h("span", {class: "thumb"}, candidate.reference_url
            ? h("img", {src: candidate.reference_url, alt: `Reference X-ray of ${implantName(candidate)}`, loading: "lazy"})
            : h("span", {class: "muted"}, "no image")),
          h("span", {class: "cand-text"},
            h("span", {class: "maker"}, candidate.manufacturer),
            h("span", {class: "system"}, candidate.system),
            h("span", {class: "sim"}, `similarity ${similarity(candidate.similarity)}`))));
    })));
}

// The candidate shown for comparison: the decided one, else the one picked.
function chosenCandidate() {
  if (!state.current) return null;
  const decision = state.current.decision;
  const rank = decision ? decision.chosen_rank : (state.override ? null : state.rank);
  return currentImage().candidates.find((c) => c.rank === rank) || null;
}

function toggleCompare() {
  state.compare = !state.compare;
  renderCase();
}

function selectedImplantLabel() {
  if (state.override) return implantName(state.override);
  const candidate = currentImage().candidates.find((c) => c.rank === state.rank);
  return candidate ? implantName(candidate) : null;
}

function renderActions() {
  const label = selectedImplantLabel();
  const parts = [
    h("label", {class: "field"}, "Note (optional, kept with the decision)",
      h("input", {id: "note", maxlength: 2000, autocomplete: "off", value: state.note,
        oninput: (event) => { state.note = event.target.value; },
        onkeydown: (event) => { if (event.key === "Enter") { event.preventDefault(); approve().catch(failed); } }})),
    h("div", {class: "actions"},
      h("button", {id: "approve", type: "button", class: "primary", disabled: !label || state.busy, onclick: approve},
        label ? `Approve ${label}` : "Approve", h("kbd", {}, "A")),
      h("button", {id: "override-open", type: "button", class: state.panel === "override" ? "on" : "",
        onclick: () => openPanel("override")}, "Other implant…", h("kbd", {}, "O")),
      h("button", {id: "reject-open", type: "button", class: `danger-outline${state.panel === "reject" ? " on" : ""}`,
        onclick: () => openPanel("reject")}, "Reject…", h("kbd", {}, "R"))),
  ];
  if (state.override) {
    parts.splice(1, 0, h("p", {class: "override-note"}, "Override: ", h("strong", {}, implantName(state.override)),
      " from the catalog instead of the candidates. ",
      h("button", {type: "button", class: "link", onclick: () => { state.override = null; renderCase(); }}, "Undo")));
  }
  if (state.panel === "override") parts.push(renderOverridePanel());
  if (state.panel === "reject") parts.push(renderRejectPanel());
  return h("div", {class: "action-area"}, parts);
}

function renderOverridePanel() {
  const results = h("ul", {id: "catalog-results", class: "catalog-results"});
  const input = h("input", {id: "catalog-search", type: "search", placeholder: "Manufacturer or system, e.g. straumann bl",
    autocomplete: "off", oninput: (event) => searchCatalog(event.target.value, results)});
  setTimeout(() => { input.focus(); searchCatalog("", results); }, 0);
  return h("div", {class: "panel"}, h("label", {class: "field"}, "Search the catalog", input), results,
    h("div", {class: "panel-actions"}, h("button", {type: "button", class: "link", onclick: closePanel}, "Cancel (Esc)")));
}

let searchSeq = 0;

async function searchCatalog(query, results) {
  const seq = ++searchSeq;
  try {
    const data = await api("GET", `/catalog?q=${encodeURIComponent(query)}`);
    if (seq !== searchSeq) return;
    results.replaceChildren(...(data.implants.length ? data.implants.map((implant) =>
      h("li", {}, h("button", {type: "button", class: "catalog-item", dataset: {implantId: implant.id},
        onclick: () => { state.override = implant; state.panel = null; renderCase(); $("approve").focus(); }},
        h("span", {}, h("span", {class: "maker"}, implant.manufacturer), " ", h("strong", {}, implant.system)),
        h("span", {class: "muted"}, [implant.implant_type, implant.connection, `${implant.references} reference(s)`]
          .filter(Boolean).join(" · "))))) : [h("li", {class: "muted empty-row"}, "No implant matches.")]));
  } catch (error) {
    failed(error);
  }
}

function renderRejectPanel() {
  const reason = h("textarea", {id: "reject-reason", rows: 3, maxlength: 2000,
    placeholder: "Why can't this X-ray be identified? The submitter will see this.",
    oninput: (event) => { state.reason = event.target.value; }});
  reason.value = state.reason;
  setTimeout(() => reason.focus(), 0);
  return h("div", {class: "panel reject"},
    h("label", {class: "field"}, "Reason", reason),
    h("div", {class: "chips"}, QUICK_REASONS.map((text) =>
      h("button", {type: "button", class: "chip", onclick: () => { reason.value = state.reason = text; reason.focus(); }}, text))),
    h("div", {class: "panel-actions"},
      h("button", {id: "reject-confirm", type: "button", class: "danger", onclick: reject}, "Reject case"),
      h("button", {type: "button", class: "link", onclick: closePanel}, "Cancel (Esc)")));
}

function renderDecision() {
  const decision = state.current.decision;
  const delivery = state.current.delivery;
  const approved = decision.decision === "approved";
  const how = approved ? (decision.chosen_rank ? `candidate ${decision.chosen_rank}` : "picked from the catalog") : null;
  const rows = [
    h("p", {class: "decision-line"}, h("span", {class: `badge ${decision.decision}`}, approved ? "Approved" : "Rejected"),
      " ", approved ? h("strong", {}, implantName(decision)) : h("span", {}, decision.reason)),
    h("p", {class: "muted"}, [`by ${decision.reviewer}`, when(decision.decided_at), how].filter(Boolean).join(" · ")),
  ];
  if (decision.note) rows.push(h("p", {class: "note-text"}, `Note: ${decision.note}`));
  if (delivery) {
    const line = [DELIVERY_LABELS[delivery.state] || delivery.state,
      delivery.attempts ? `${delivery.attempts} attempt${delivery.attempts === 1 ? "" : "s"}` : null]
      .filter(Boolean).join(" · ");
    rows.push(h("div", {class: `delivery-card ${delivery.state}`},
      h("p", {}, h("span", {class: `delivery ${delivery.state}`}, line)),
      delivery.last_error ? h("p", {class: "muted small"}, `Last error: ${delivery.last_error}`) : null,
      delivery.state === "failed" ? h("button", {id: "redeliver", type: "button", onclick: redeliver},
        "Retry delivery") : null));
  }
  return h("div", {class: "decision"}, rows);
}

// The system panel ---------------------------------------------------------------------------------

function ago(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

// What an operator should look at: stale heartbeats, jobs failed for good, failed deliveries, failed cases,
// reconciliation errors.
function systemProblems(status) {
  const problems = [];
  for (const [name, beat] of Object.entries(status.heartbeats)) {
    if (beat.stale) problems.push(`${name} last reported ${ago(beat.seconds_ago)} ago`);
  }
  for (const [kind, jobs] of Object.entries(status.jobs)) {
    if (jobs.failed) problems.push(`${jobs.failed} ${kind} job${jobs.failed === 1 ? "" : "s"} failed for good`);
  }
  if (status.failed_deliveries) problems.push(`${status.failed_deliveries} delivery(ies) failed: see Decided`);
  if (status.needs_attention) problems.push(`${status.needs_attention} case(s) need attention`);
  for (const form of status.reconciliation) {
    if (form.last_error) problems.push(`reconciliation of form ${form.form_id}: ${form.last_error}`);
  }
  return problems;
}

async function loadSystem() {
  state.system = await api("GET", "/status");
  const problems = systemProblems(state.system);
  const badge = $("system-open");
  badge.classList.toggle("alert", problems.length > 0);
  $("system-label").textContent = problems.length ? `System · ${problems.length} alert${problems.length === 1 ? "" : "s"}`
    : "System OK";
  if (!$("system-panel").hidden) renderSystem();
}

function toggleSystem(open = $("system-panel").hidden) {
  $("system-panel").hidden = !open;
  $("system-open").setAttribute("aria-expanded", String(open));
  if (open) {
    renderSystem();
    loadSystem().catch(failed);
  }
}

function renderSystem() {
  const status = state.system;
  const panel = $("system-panel");
  const close = h("button", {type: "button", class: "link", onclick: () => toggleSystem(false)}, "Close (Esc)");
  if (!status) {
    panel.replaceChildren(h("div", {class: "system-head"}, h("h2", {}, "System"), close), h("p", {class: "muted"}, "Loading…"));
    return;
  }
  const problems = systemProblems(status);
  const cell = (value, bad) => h("td", {class: bad ? "bad" : null}, value);
  const jobs = Object.entries(status.jobs);
  const beats = Object.entries(status.heartbeats);
  fill(panel,
    h("div", {class: "system-head"}, h("h2", {}, "System"),
      h("button", {id: "system-refresh", type: "button", class: "link", onclick: () => loadSystem().catch(failed)}, "Refresh"),
      close),
    problems.length ? h("ul", {id: "system-problems", class: "problems"}, problems.map((text) => h("li", {}, text)))
      : h("p", {id: "system-problems", class: "all-ok"}, "Nothing needs attention."),
    h("h3", {class: "section-title"}, "Jobs"),
    jobs.length ? h("table", {class: "jobs-table"},
      h("thead", {}, h("tr", {}, ["kind", "due", "retrying", "running", "failed", "oldest due"].map((t) => h("th", {}, t)))),
      h("tbody", {}, jobs.map(([kind, row]) => h("tr", {dataset: {kind}},
        h("th", {}, kind), cell(row.due), cell(row.waiting_to_retry), cell(row.running), cell(row.failed, row.failed > 0),
        cell(row.due ? ago(row.oldest_due_seconds) : "—", row.oldest_due_seconds > 600)))))
      : h("p", {class: "muted"}, "No job yet."),
    h("h3", {class: "section-title"}, "Heartbeats"),
    beats.length ? h("ul", {class: "beats"}, beats.map(([name, beat]) =>
      h("li", {class: `beat${beat.stale ? " stale" : ""}`, dataset: {name}},
        h("span", {class: "beat-name"}, name),
        h("span", {}, `${ago(beat.seconds_ago)} ago${beat.stale ? " · stale" : ""}`))))
      : h("p", {class: "muted"}, "No sweeper or worker has reported yet."),
    h("h3", {class: "section-title"}, "Deliveries and cases"),
    h("p", {class: status.failed_deliveries ? "bad" : null, id: "system-deliveries"},
      `${status.failed_deliveries} failed deliver${status.failed_deliveries === 1 ? "y" : "ies"} · `
      + `${status.needs_attention} case(s) need attention`),
    status.reconciliation.length ? [h("h3", {class: "section-title"}, "Jotform reconciliation"),
      h("ul", {class: "beats"}, status.reconciliation.map((form) =>
        h("li", {class: `beat${form.last_error ? " stale" : ""}`},
          h("span", {class: "beat-name"}, `form ${form.form_id}`),
          h("span", {}, form.last_error || (form.last_run_at ? `ran ${when(form.last_run_at)}` : "never ran")))))] : null);
}

// Actions ------------------------------------------------------------------------------------------

function pick(rank) {
  if (!state.current || state.current.decision) return;
  if (!currentImage().candidates.some((c) => c.rank === rank)) return;
  state.rank = rank;
  state.override = null;
  renderCase();
}

function openPanel(panel) {
  if (!state.current || state.current.decision) return;
  state.panel = state.panel === panel ? null : panel;
  renderCase();
}

function closePanel() {
  state.panel = null;
  renderCase();
}

async function approve() {
  if (!state.current || state.current.decision || state.busy) return;
  const body = state.override ? {action: "approve", implant_id: state.override.id}
    : {action: "approve", rank: state.rank, image_id: currentImage().id};
  await decide(body);
}

async function reject() {
  const reason = state.reason;
  if (!reason.trim()) {
    showMessage("Write a reason before rejecting: the submitter will see it.");
    $("reject-reason").focus();
    return;
  }
  await decide({action: "reject", reason: reason.trim()});
}

async function decide(body) {
  if (state.note.trim()) body.note = state.note.trim();
  const caseId = state.current.case.id;
  const label = body.action === "approve" ? selectedImplantLabel() : null;
  state.busy = true;
  document.querySelectorAll(".action-area button").forEach((button) => { button.disabled = true; });
  try {
    await api("POST", `/cases/${caseId}/decision`, body);
  } catch (error) {
    state.busy = false;
    failed(error);
    if (error.status === 409 || error.status === 404) await refreshAfterConflict(caseId);
    else if (state.current) renderCase();
    return;
  }
  state.busy = false;
  showMessage(body.action === "approve" ? `Case #${caseId} approved as ${label}.` : `Case #${caseId} rejected.`, "success");
  await nextCase(caseId).catch(failed);
}

// After a decision: the case leaves the queue and the next one opens.
async function nextCase(decidedId) {
  const index = state.cases.findIndex((item) => item.id === decidedId);
  state.current = null;
  await loadList();
  if (state.tab !== "queue") return;
  const next = state.cases[Math.min(Math.max(index, 0), state.cases.length - 1)];
  if (next) await openCase(next.id);
  else showEmpty();
}

async function refreshAfterConflict(caseId) {
  try {
    await loadList();
    await openCase(caseId);
  } catch (error) {
    state.current = null;
    showEmpty();
  }
}

function showEmpty() {
  $("case-view").hidden = true;
  $("no-case").hidden = false;
  $("no-case").firstElementChild.textContent = state.tab === "queue"
    ? "All caught up: no case is waiting for review." : "Select a case on the left.";
  renderList();
}

async function redeliver() {
  const caseId = state.current.case.id;
  const button = $("redeliver");
  button.disabled = true;
  try {
    await api("POST", `/cases/${caseId}/redeliver`);
    showMessage(`Delivery of case #${caseId} queued again.`, "success");
    await loadList();
    await openCase(caseId);
  } catch (error) {
    failed(error);
    button.disabled = false;
  }
}

function step(offset) {
  if (!state.cases.length) return;
  const index = state.current ? state.cases.findIndex((item) => item.id === state.current.case.id) : -1;
  const next = state.cases[Math.min(state.cases.length - 1, Math.max(0, index + offset))];
  if (next && (!state.current || next.id !== state.current.case.id)) openCase(next.id).catch(failed);
}

function onKey(event) {
  if ($("app").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName);
  if (event.key === "Escape") {
    event.preventDefault();
    if (!$("system-panel").hidden) toggleSystem(false);
    else if (state.erasing) { state.erasing = false; renderCase(); }
    else if (state.panel) closePanel();
    else hideMessage();
    return;
  }
  if (typing) return;
  const key = event.key.toLowerCase();
  if (["1", "2", "3", "4", "5"].includes(key)) pick(Number(key));
  else if (key === "a") approve().catch(failed);
  else if (key === "r") openPanel("reject");
  else if (key === "o" || key === "/") openPanel("override");
  else if (key === "c" && state.current) toggleCompare();
  else if (key === "j") step(1);
  else if (key === "k") step(-1);
  else return;
  event.preventDefault();
}

// Start --------------------------------------------------------------------------------------------

$("login-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => logOut());
for (const tab of Object.keys(TABS)) {
  $(`tab-${tab}`).addEventListener("click", () => { selectTab(tab); loadList().catch(failed); });
}
$("system-open").addEventListener("click", () => toggleSystem());
$("load-more").addEventListener("click", () => loadList({append: true}).catch(failed));
document.addEventListener("keydown", onKey);
setInterval(() => {
  if (state.token && document.visibilityState === "visible" && !state.busy) {
    loadList().catch(failed);
    loadSystem().catch(failed);
  }
}, REFRESH_MS);

if (state.token) showApp().catch(failed);
else showLogin();
