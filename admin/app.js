// Raiox review page: plain browser JavaScript over the approve API (no build step, no dependencies).
"use strict";

// The approve function serves this page at …/approve/admin/index.html, so its API is the folder above: same
// origin, nothing to configure per deployment.
const API = new URL("..", window.location.href).pathname.replace(/\/+$/, "");
const PAGE_SIZE = 50;
const REFRESH_MS = 30000;
const QUICK_REASONS = ["X-ray too blurred to identify", "No implant visible", "Implant system not in the catalog",
  "Several implants: send one X-ray per implant"];
// One word per state, as the API, the CLI and docs/review.md#states say it ("processing": received + embedding).
const STATUS_LABELS = [["ready", "Ready"], ["processing", "Processing"], ["approved", "Approved"],
  ["rejected", "Rejected"], ["notified", "Notified"], ["failed", "Failed"]];
const DELIVERY_LABELS = {queued: "Delivery queued", sending: "Sending", retrying: "Retrying delivery",
  notified: "Notified", failed: "Delivery failed", none: "Not queued"};
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
  implant: 0,         // the position of the implant whose candidates are shown (0: the most implant-like)
  outlines: true,     // the implants' outlines drawn on the film
  rank: 1,
  override: null,     // implant picked from the catalog
  panel: null,        // "override" | "reject" | null
  note: "",
  compare: false,     // the chosen candidate's reference beside the X-ray
  reason: "",
  busy: false,
  historyOpen: false, // the case's access history is unfolded
  full: false,        // the full-screen compare is open
  target: null,       // what the film is compared with: {kind: "candidate", rank} | {kind: "catalog", implant}
  views: {film: freshView(), ref: freshView()},
  locked: true,       // film and reference share one view
  activePane: "film", // the pane keys and toolbar act on when unlocked
  tool: "pan",        // what dragging on the film does: pan | ruler | calibrate
  calibrating: null,  // the ruler whose known length is being asked for
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
  state.full = false;
  setModal(false);
  $("system-panel").hidden = true;
  measures.clear();
  filmViewer.show(null, "", "");
  refViewer.show(null, "", "");
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

// The film viewer ----------------------------------------------------------------------------------
// An SVG per pane: the image sits in a group whose transform attribute holds the view (fit, zoom, pan, rotation,
// flips) and whose filter does brightness, contrast and invert; the implants' outlines sit in that group too (film
// pixels), their numbers and the rulers are drawn over it in screen space. SVG attributes are not styles, so the
// strict policy (style-src 'self') has nothing to block.

const SVG_NS = "http://www.w3.org/2000/svg";
const ZOOM_MIN = 0.5;
const ZOOM_MAX = 40;
const ZOOM_STEP = 1.25;
const PAN_STEP = 0.1;          // of the pane, per arrow key
const BRIGHTNESS_STEP = 0.05;
const CONTRAST_STEP = 1.15;
const SIZE_TOLERANCE_MM = 0.5; // a measurement this far outside a catalog range still counts as within it

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(key, String(value));
  }
  node.append(...children);
  return node;
}

function freshView() {
  return {zoom: 1, x: 0, y: 0, rotation: 0, flipX: false, flipY: false, brightness: 0, contrast: 1, invert: false};
}

// Affine matrices as SVG's matrix(a b c d e f): x' = a·x + c·y + e, y' = b·x + d·y + f.
const multiply = (m, n) => [m[0] * n[0] + m[2] * n[1], m[1] * n[0] + m[3] * n[1], m[0] * n[2] + m[2] * n[3],
  m[1] * n[2] + m[3] * n[3], m[0] * n[4] + m[2] * n[5] + m[4], m[1] * n[4] + m[3] * n[5] + m[5]];
const applyTo = (m, p) => ({x: m[0] * p.x + m[2] * p.y + m[4], y: m[1] * p.x + m[3] * p.y + m[5]});
function inverse(m) {
  const det = m[0] * m[3] - m[1] * m[2];
  return [m[3] / det, -m[1] / det, -m[2] / det, m[0] / det, (m[2] * m[5] - m[3] * m[4]) / det,
    (m[1] * m[4] - m[0] * m[5]) / det];
}
const clamp = (value, low, high) => Math.min(high, Math.max(low, value));

// The film and the compared reference share one view while locked; unlocked, each has its own.
function viewOf(pane) {
  return pane === "film" || state.locked ? state.views.film : state.views.ref;
}

// Keys and toolbar act on the pane last touched (the film unless the reference was, unlocked).
function activeView() {
  return viewOf(state.compare || state.full ? state.activePane : "film");
}

class Viewer {
  constructor(pane, measuring) {
    this.pane = pane;
    this.measuring = measuring;  // rulers are drawn on the film only
    this.url = null;
    this.natural = null;         // {w, h}: the image's own pixels
    this.pointers = new Map();
    this.gesture = null;
    this.marks = new Map();      // ruler id → its SVG elements
    this.image = svg("image", {preserveAspectRatio: "none"});
    this.funcs = ["R", "G", "B"].map((channel) => svg(`feFunc${channel}`, {type: "linear", slope: 1, intercept: 0}));
    this.filterId = `adjust-${pane}`;
    this.outlines = svg("g", {class: "implant-outlines"});  // in film pixels: they follow every view change
    this.outlineLabels = svg("g", {class: "implant-labels"});  // in screen space: numbers stay upright and legible
    this.implants = [];          // the outlines drawn: [{position, box, selected}]
    this.layer = svg("g", {class: "film-layer"}, this.image, this.outlines);
    this.overlay = svg("g", {class: "marks"});
    this.canvas = svg("svg", {class: "viewer-canvas"},
      svg("defs", {}, svg("filter", {id: this.filterId, "color-interpolation-filters": "sRGB", x: 0, y: 0, width: 1,
        height: 1}, svg("feComponentTransfer", {}, ...this.funcs))),
      this.layer, this.outlineLabels, this.overlay);
    this.label = h("span", {class: "pane-label"});
    this.note = h("p", {class: "xray-missing viewer-note", hidden: true});
    this.root = h("div", {class: `viewer viewer-${pane}`, dataset: {pane, loaded: "false"}},
      this.canvas, this.label, this.note);
    new ResizeObserver(() => this.render()).observe(this.root);
    this.canvas.addEventListener("pointerdown", (event) => this.down(event));
    this.canvas.addEventListener("pointermove", (event) => this.move(event));
    this.canvas.addEventListener("pointerup", (event) => this.up(event));
    this.canvas.addEventListener("pointercancel", (event) => this.up(event));
    this.canvas.addEventListener("wheel", (event) => this.wheel(event), {passive: false});
  }

  // Shows `url`. The same link again changes nothing; a fresh link to the same X-ray (links expire) reloads the
  // picture, while the view and the rulers (kept outside the viewer) stay as they were.
  show(url, label, alt) {
    this.label.textContent = label;
    this.root.setAttribute("role", "group");
    this.root.setAttribute("aria-label", label);
    this.image.setAttribute("role", "img");
    this.image.setAttribute("aria-label", alt);
    if (url === this.url) return;
    this.url = url;
    this.natural = null;
    this.image.removeAttribute("href");
    this.root.dataset.loaded = "false";
    this.note.hidden = true;
    this.clearMarks();
    if (!url) return;
    const probe = new Image();
    probe.onload = () => {
      if (this.url !== url) return;
      this.natural = {w: probe.naturalWidth, h: probe.naturalHeight};
      this.image.setAttribute("href", url);
      this.image.setAttribute("width", this.natural.w);
      this.image.setAttribute("height", this.natural.h);
      this.root.dataset.loaded = "true";
      this.render();
    };
    probe.onerror = () => {
      if (this.url !== url) return;
      this.note.textContent = "The image did not load (its link may have expired). Reopen the case to get a fresh link.";
      this.note.hidden = false;
    };
    probe.src = url;
  }

  size() {
    return {w: this.root.clientWidth, h: this.root.clientHeight};
  }

  // Image pixels → pane pixels: fit the (turned) image, zoom, pan, turn, flip on screen.
  matrix() {
    const view = viewOf(this.pane);
    const {w, h: height} = this.natural;
    const pane = this.size();
    const turned = view.rotation % 180 !== 0;
    const scale = Math.min(pane.w / (turned ? height : w), pane.h / (turned ? w : height)) * view.zoom;
    const cos = Math.round(Math.cos(view.rotation * Math.PI / 180));
    const sin = Math.round(Math.sin(view.rotation * Math.PI / 180));
    let m = [1, 0, 0, 1, pane.w / 2 + view.x, pane.h / 2 + view.y];
    m = multiply(m, [view.flipX ? -1 : 1, 0, 0, view.flipY ? -1 : 1, 0, 0]);
    m = multiply(m, [cos, sin, -sin, cos, 0, 0]);
    return multiply(m, [scale, 0, 0, scale, -scale * w / 2, -scale * height / 2]);
  }

  render() {
    if (!this.natural || !this.root.isConnected || !this.size().w) return;
    const view = viewOf(this.pane);
    const m = this.matrix();
    this.layer.setAttribute("transform", `matrix(${m.map((n) => Number(n.toFixed(5))).join(" ")})`);
    // Window/level as one linear map per channel: out = contrast·(in − ½) + ½ + brightness, then inverted.
    let slope = view.contrast;
    let intercept = 0.5 - 0.5 * view.contrast + view.brightness;
    if (view.invert) {
      slope = -slope;
      intercept = 1 - intercept;
    }
    for (const func of this.funcs) {
      func.setAttribute("slope", Number(slope.toFixed(4)));
      func.setAttribute("intercept", Number(intercept.toFixed(4)));
    }
    if (slope === 1 && Math.abs(intercept) < 1e-9) this.image.removeAttribute("filter");
    else this.image.setAttribute("filter", `url(#${this.filterId})`);
    this.root.dataset.zoom = view.zoom.toFixed(3);
    // The view in one line (zoom, pan, turn, flips), for seeing at a glance that locked panes share it.
    this.root.dataset.view = [view.zoom.toFixed(3), view.x.toFixed(1), view.y.toFixed(1), view.rotation,
      view.flipX ? "flipX" : "-", view.flipY ? "flipY" : "-"].join(" ");
    this.placeOutlineLabels(m);
    if (this.measuring) this.drawRulers(m);
  }

  // Outlines the implants found on the film (`box`: four corners in film pixels), the selected one last, on top.
  setOutlines(implants) {
    const ordered = [...implants].sort((a, b) => Number(a.selected) - Number(b.selected));
    this.implants = ordered;
    this.outlines.replaceChildren(...ordered.map((implant) => svg("polygon", {
      class: `implant-outline${implant.selected ? " selected" : ""}`, "data-implant": implant.position,
      points: implant.box.map(([x, y]) => `${x},${y}`).join(" ")})));
    this.outlineLabels.replaceChildren(...ordered.map((implant) => svg("text", {
      class: `implant-label${implant.selected ? " selected" : ""}`, "data-implant": implant.position,
      "text-anchor": "middle"}, String(implant.position + 1))));
    this.root.dataset.outlines = String(ordered.length);
    this.render();
  }

  // Each outline's number just above its highest corner on screen, whatever the rotation and flips.
  placeOutlineLabels(m) {
    for (const [index, implant] of this.implants.entries()) {
      const top = implant.box.map(([x, y]) => applyTo(m, {x, y})).reduce((a, b) => (b.y < a.y ? b : a));
      const label = this.outlineLabels.children[index];
      label.setAttribute("x", top.x.toFixed(1));
      label.setAttribute("y", (top.y - 6).toFixed(1));
    }
  }

  local(event) {
    const box = this.canvas.getBoundingClientRect();
    return {x: event.clientX - box.left, y: event.clientY - box.top};
  }

  toImage(point) {
    const p = applyTo(inverse(this.matrix()), point);
    return {x: clamp(p.x, 0, this.natural.w), y: clamp(p.y, 0, this.natural.h)};
  }

  // Zooms by `factor` keeping the pane point `at` (default: the centre) where it is.
  zoomBy(factor, at) {
    const view = viewOf(this.pane);
    const pane = this.size();
    const point = at || {x: pane.w / 2, y: pane.h / 2};
    const zoom = clamp(view.zoom * factor, ZOOM_MIN, ZOOM_MAX);
    const f = zoom / view.zoom;
    view.x = point.x - pane.w / 2 - f * (point.x - pane.w / 2 - view.x);
    view.y = point.y - pane.h / 2 - f * (point.y - pane.h / 2 - view.y);
    view.zoom = zoom;
    viewChanged();
  }

  wheel(event) {
    if (!this.natural) return;
    event.preventDefault();
    state.activePane = this.pane;
    const unit = event.deltaMode === 1 ? 33 : event.deltaMode === 2 ? 400 : 1;
    this.zoomBy(Math.exp(-event.deltaY * unit * 0.0015), this.local(event));
  }

  down(event) {
    if (!this.natural || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    state.activePane = this.pane;
    try { this.canvas.setPointerCapture(event.pointerId); } catch (error) { /* a synthetic pointer */ }
    const point = this.local(event);
    this.pointers.set(event.pointerId, point);
    if (this.pointers.size === 2) {  // a second finger: pinch, dropping a ruler just begun
      if (this.gesture && this.gesture.type === "draw") removeRuler(this.gesture.id, false);
      const [a, b] = [...this.pointers.values()];
      this.gesture = {type: "pinch", distance: Math.hypot(a.x - b.x, a.y - b.y), middle: midpoint(a, b)};
      return;
    }
    if (this.pointers.size > 2) return;
    // preventDefault above also keeps the focus where it was: a grabbed ruler end takes it (for the arrow keys),
    // and a text field gives it up, so the keys pressed next act on the film.
    const handle = event.target.closest && event.target.closest(".ruler-handle");
    if (handle) handle.focus({preventScroll: true});
    else if (document.activeElement && document.activeElement.matches("input, textarea")) document.activeElement.blur();
    if (this.measuring && handle) {
      this.gesture = {type: "handle", id: Number(handle.dataset.ruler), end: handle.dataset.end};
      selectRuler(this.gesture.id);
    } else if (this.measuring && state.tool !== "pan") {
      const at = this.toImage(point);
      const ruler = addRuler(at, at);
      this.gesture = {type: "draw", id: ruler.id};
    } else {
      this.gesture = {type: "pan", last: point};
    }
  }

  move(event) {
    if (!this.pointers.has(event.pointerId)) return;
    const point = this.local(event);
    this.pointers.set(event.pointerId, point);
    const gesture = this.gesture;
    if (!gesture) return;
    const view = viewOf(this.pane);
    if (gesture.type === "pinch" && this.pointers.size === 2) {
      const [a, b] = [...this.pointers.values()];
      const distance = Math.hypot(a.x - b.x, a.y - b.y);
      const middle = midpoint(a, b);
      view.x += middle.x - gesture.middle.x;
      view.y += middle.y - gesture.middle.y;
      this.zoomBy(distance / Math.max(gesture.distance, 1), middle);
      gesture.distance = distance;
      gesture.middle = middle;
    } else if (gesture.type === "pan") {
      view.x += point.x - gesture.last.x;
      view.y += point.y - gesture.last.y;
      gesture.last = point;
      viewChanged();
    } else if (gesture.type === "draw" || gesture.type === "handle") {
      const ruler = findRuler(gesture.id);
      if (!ruler) return;
      ruler[gesture.type === "draw" || gesture.end === "b" ? "b" : "a"] = this.toImage(point);
      this.render();
    }
  }

  up(event) {
    if (!this.pointers.delete(event.pointerId)) return;
    const gesture = this.gesture;
    if (gesture && gesture.type === "pinch") {
      const [left] = [...this.pointers.values()];
      this.gesture = left ? {type: "pan", last: left} : null;
      return;
    }
    if (this.pointers.size) return;
    this.gesture = null;
    if (!gesture) return;
    if (gesture.type === "draw") {
      const ruler = findRuler(gesture.id);
      if (ruler && rulerPixels(ruler) < 2) removeRuler(ruler.id, false);  // a tap, not a line
      else if (ruler && state.tool === "calibrate") {
        state.calibrating = ruler.id;
        state.tool = "ruler";
      }
      measurementsChanged();
    } else if (gesture.type === "handle") {
      measurementsChanged();
    }
  }

  clearMarks() {
    this.overlay.replaceChildren();
    this.marks.clear();
  }

  // Rulers in screen space (constant line width and handle size at any zoom); their elements are kept between
  // renders so a focused handle stays focused while the arrow keys move it.
  drawRulers(m) {
    const measure = currentMeasure();
    const alive = new Set();
    for (const [index, ruler] of (measure ? measure.rulers : []).entries()) {
      alive.add(ruler.id);
      let mark = this.marks.get(ruler.id);
      if (!mark) {
        const handle = (end) => svg("circle", {class: "ruler-handle", r: 9, tabindex: 0, "data-ruler": ruler.id,
          "data-end": end, "aria-label": `Ruler ${index + 1}, ${end === "a" ? "start" : "end"}: arrow keys move it, `
            + "Shift for 10 pixels"});
        mark = {line: svg("line", {class: "ruler-line"}), text: svg("text", {class: "ruler-label"}),
          a: handle("a"), b: handle("b")};
        mark.group = svg("g", {class: "ruler", "data-ruler": ruler.id}, mark.line, mark.a, mark.b, mark.text);
        for (const end of ["a", "b"]) mark[end].addEventListener("focus", () => selectRuler(ruler.id, false));
        this.overlay.append(mark.group);
        this.marks.set(ruler.id, mark);
      }
      const a = applyTo(m, ruler.a);
      const b = applyTo(m, ruler.b);
      const calibrates = measure.calibration && measure.calibration.ruler === ruler.id;
      mark.group.setAttribute("class", `ruler${measure.selected === ruler.id ? " selected" : ""}`
        + `${calibrates ? " calibration" : ""}`);
      for (const [node, p] of [[mark.a, a], [mark.b, b]]) {
        node.setAttribute("cx", p.x.toFixed(1));
        node.setAttribute("cy", p.y.toFixed(1));
      }
      mark.line.setAttribute("x1", a.x.toFixed(1));
      mark.line.setAttribute("y1", a.y.toFixed(1));
      mark.line.setAttribute("x2", b.x.toFixed(1));
      mark.line.setAttribute("y2", b.y.toFixed(1));
      mark.text.setAttribute("x", ((a.x + b.x) / 2 + 10).toFixed(1));
      mark.text.setAttribute("y", ((a.y + b.y) / 2 - 10).toFixed(1));
      mark.text.textContent = `${index + 1}: ${rulerText(ruler)}`;
    }
    for (const [id, mark] of this.marks) {
      if (!alive.has(id)) {
        mark.group.remove();
        this.marks.delete(id);
      }
    }
  }
}

const midpoint = (a, b) => ({x: (a.x + b.x) / 2, y: (a.y + b.y) / 2});

let filmViewer = null;
let refViewer = null;

function viewers() {
  return [filmViewer, refViewer].filter((viewer) => viewer && viewer.root.isConnected);
}

function viewChanged() {
  for (const viewer of viewers()) viewer.render();
  syncTools();
}

function resetViews() {
  state.views = {film: freshView(), ref: freshView()};
  viewChanged();
}

function changeView(change) {
  change(activeView());
  viewChanged();
}

function activeViewer() {
  return (state.compare || state.full) && state.activePane === "ref" && !state.locked ? refViewer : filmViewer;
}

function toggleLock() {
  state.locked = !state.locked;
  if (!state.locked) state.views.ref = {...state.views.film};  // unlocking leaves both where they are
  viewChanged();
}

// Measurements ------------------------------------------------------------------------------------
// Per X-ray (kept while the page is open): rulers in image pixels, which one is selected, which says the
// implant's length or diameter, and which one calibrates the scale.

const measures = new Map();
let rulerIds = 0;

function currentMeasure(create = false) {
  const image = state.current && currentImage();
  if (!image || !image.id) return null;
  if (!measures.has(image.id) && create) {
    measures.set(image.id, {rulers: [], selected: null, length: null, diameter: null, calibration: null});
  }
  return measures.get(image.id) || null;
}

function findRuler(id) {
  const measure = currentMeasure();
  return measure ? measure.rulers.find((ruler) => ruler.id === id) || null : null;
}

function addRuler(a, b) {
  const measure = currentMeasure(true);
  const ruler = {id: ++rulerIds, a, b};
  measure.rulers.push(ruler);
  measure.selected = ruler.id;
  return ruler;
}

function removeRuler(id, render = true) {
  const measure = currentMeasure();
  if (!measure) return;
  measure.rulers = measure.rulers.filter((ruler) => ruler.id !== id);
  for (const key of ["selected", "length", "diameter"]) if (measure[key] === id) measure[key] = null;
  if (measure.calibration && measure.calibration.ruler === id) measure.calibration = null;
  if (state.calibrating === id) state.calibrating = null;
  if (render) measurementsChanged();
}

function selectRuler(id, render = true) {
  const measure = currentMeasure();
  if (!measure || measure.selected === id) return;
  measure.selected = id;
  if (render) filmViewer.render();
}

const rulerPixels = (ruler) => Math.hypot(ruler.b.x - ruler.a.x, ruler.b.y - ruler.a.y);

// Millimetres per pixel (between rows, between columns): a calibration wins over the file's pixel spacing.
function scale() {
  const measure = currentMeasure();
  const calibration = measure && measure.calibration;
  if (calibration) {
    const ruler = findRuler(calibration.ruler);
    const perPixel = calibration.mm / Math.max(rulerPixels(ruler), 1e-6);
    return {row: perPixel, col: perPixel, source: "calibration"};
  }
  const spacing = currentImage().pixel_spacing_mm;
  return spacing ? {row: spacing[0], col: spacing[1], source: "file"} : null;
}

function rulerMillimetres(ruler) {
  const mm = scale();
  return mm ? Math.hypot((ruler.b.x - ruler.a.x) * mm.col, (ruler.b.y - ruler.a.y) * mm.row) : null;
}

function rulerText(ruler) {
  const mm = rulerMillimetres(ruler);
  return mm === null ? `${Math.round(rulerPixels(ruler))} px` : `${mm.toFixed(1)} mm`;
}

// The implant's measured length and diameter in mm (null where no ruler says it, or there is no scale).
function measuredSizes() {
  const measure = currentMeasure();
  const sizes = {length: null, diameter: null};
  if (!measure || !scale()) return sizes;
  for (const size of Object.keys(sizes)) {
    const ruler = measure[size] && findRuler(measure[size]);
    if (ruler) sizes[size] = rulerMillimetres(ruler);
  }
  return sizes;
}

const rangeText = (range) => (range[0] === range[1] ? `${range[0]}` : `${range[0]}–${range[1]}`);

// How an implant's catalog sizes compare with the measurement: "outside" when a measured size is more than the
// tolerance outside its range, "within" when every measured size with a range fits, null when nothing compares.
function sizeCheck(item) {
  const measured = measuredSizes();
  const notes = [];
  let verdict = null;
  for (const [size, label] of [["length", "Length"], ["diameter", "Diameter"]]) {
    const range = item[`${size}_mm`];
    const value = measured[size];
    if (value === null || !range) continue;
    const outside = value < range[0] - SIZE_TOLERANCE_MM || value > range[1] + SIZE_TOLERANCE_MM;
    notes.push(`${label} ${value.toFixed(1)} mm ${outside ? "is outside" : "fits"} ${rangeText(range)} mm`);
    verdict = outside || verdict === "outside" ? "outside" : "within";
  }
  return {verdict, text: notes.join("; ")};
}

function sizeRanges(item) {
  return [item.diameter_mm && `Ø ${rangeText(item.diameter_mm)} mm`, item.length_mm && `L ${rangeText(item.length_mm)} mm`]
    .filter(Boolean).join(" · ");
}

function measurementsChanged() {
  renderCase();
}

function assignRuler(id, size) {
  const measure = currentMeasure();
  measure[size] = measure[size] === id ? null : id;
  for (const other of ["length", "diameter"]) if (other !== size && measure[other] === id) measure[other] = null;
  measurementsChanged();
}

function setCalibration(id, mm) {
  const measure = currentMeasure();
  if (!(mm > 0 && mm < 200)) {
    showMessage("Enter the known length in millimetres, e.g. 10 or 11.5.");
    return;
  }
  measure.calibration = {ruler: id, mm};
  state.calibrating = null;
  measurementsChanged();
}

// A ruler from the keyboard: level across the middle of the pane, a quarter of its smaller side long (so on the
// film when it is fitted); its ends then move with the arrow keys.
function keyboardRuler() {
  if (!filmViewer || !filmViewer.natural || !currentImage().id) return;
  const pane = filmViewer.size();
  const half = Math.min(pane.w, pane.h) / 8;
  const ruler = addRuler(filmViewer.toImage({x: pane.w / 2 - half, y: pane.h / 2}),
    filmViewer.toImage({x: pane.w / 2 + half, y: pane.h / 2}));
  measurementsChanged();
  const handle = filmViewer.overlay.querySelector(`.ruler-handle[data-ruler="${ruler.id}"][data-end="b"]`);
  if (handle) handle.focus();
}

function nudgeHandle(handle, key, big) {
  const ruler = findRuler(Number(handle.dataset.ruler));
  if (!ruler) return;
  // Arrow keys move the end as it looks on screen, whatever the rotation and flips.
  const step = big ? 10 : 1;
  const screen = {ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1]}[key];
  const m = filmViewer.matrix();
  const origin = applyTo(inverse(m), {x: 0, y: 0});
  const moved = applyTo(inverse(m), {x: screen[0], y: screen[1]});
  const length = Math.hypot(moved.x - origin.x, moved.y - origin.y);
  const end = ruler[handle.dataset.end];
  end.x = clamp(end.x + Math.round((moved.x - origin.x) / length) * step, 0, filmViewer.natural.w);
  end.y = clamp(end.y + Math.round((moved.y - origin.y) / length) * step, 0, filmViewer.natural.h);
  filmViewer.render();
  clearTimeout(nudgeTimer);
  nudgeTimer = setTimeout(measurementsChanged, 250);  // the list and the candidates follow once the keys rest
}
let nudgeTimer = null;

// Implants ----------------------------------------------------------------------------------------
// The embed step finds every implant on an X-ray, straightens each into a canonical crop (platform up), measures
// it and matches it on its own. The reviewer picks which implant the candidates, the emphasised outline and the
// shape table are about. Cases embedded before this have no implants: the X-ray's own candidates are shown.

// The shape table's rows: `measured` on the straightened crop (ratios to the implant's outer diameter, Ø; `mm`
// when the film's pixel spacing is known) and what the shape encoder `read` off it; two measurements further
// apart than `near` (or two different readings) differ notably.
const SHAPE_ROWS = [
  {key: "thread_form", label: "Thread form", read: "thread_profile"},
  {key: "pitch", label: "Pitch / Ø", measured: "pitch_per_diameter", mm: "pitch_mm", read: "pitch_per_diameter",
    digits: 3, near: 0.03},
  {key: "depth", label: "Depth / Ø", measured: "depth_per_diameter", mm: "depth_mm", read: "depth_per_diameter",
    digits: 3, near: 0.02},
  {key: "collar", label: "Collar / Ø", measured: "collar_per_diameter", mm: "collar_mm", read: "collar_per_diameter",
    digits: 2, near: 0.15},
  {key: "taper", label: "Taper", measured: "taper", read: "taper", digits: 2, near: 0.1,
    hint: "How much the body narrows towards the apex (0: parallel walls)"},
  {key: "apex", label: "Apex", measured: "apex_rounding", read: "apex", digits: 2, near: 0.3,
    hint: "Measured: how much the last tenth narrows, 0 flat … 1 pointed"},
  {key: "vent", label: "Vent", measured: "vent", read: "apex_vent", digits: 2, near: 0.1,
    hint: "Measured: how much darker the axis is near the apex (a hole or vent)"},
  {key: "connection", label: "Connection", measured: "external_hex", read: "connection", digits: 2, near: 0.3,
    hint: "Measured: width of metal above the platform narrower than it (an external hex; 0: none)"},
  {key: "microthreads", label: "Micro-threads", measured: "microthreads", read: "microthreads", digits: 2, near: 0.3,
    hint: "Measured: strength of fine threads at the collar (0: none)"},
  {key: "leads", label: "Leads", read: "thread_leads", hint: "Thread starts (1: single lead)"},
];

function currentImplants() {
  return currentImage().implants || [];
}

// The implant whose candidates are shown: the one picked, else the most implant-like; null on older cases.
function currentImplant() {
  const implants = currentImplants();
  return implants.find((implant) => implant.position === state.implant) || implants[0] || null;
}

// The candidates on screen: the selected implant's, or the X-ray's own on a case from before implants.
function currentCandidates() {
  const implant = currentImplant();
  return implant ? implant.candidates : currentImage().candidates;
}

const implantLabel = (implant) => `Implant ${implant.position + 1}`;

function selectImplant(position) {
  if (!currentImplants().some((implant) => implant.position === position)) return;
  state.implant = position;
  state.rank = 1;
  state.target = null;
  renderCase();
}

function cycleImplant(step) {
  const implants = currentImplants();
  if (implants.length < 2) return;
  const index = implants.indexOf(currentImplant());
  selectImplant(implants[(index + step + implants.length) % implants.length].position);
}

function toggleOutlines() {
  state.outlines = !state.outlines;
  renderCase();
}

// What the film viewer outlines: every implant found (not the whole-film fallback), the selected one emphasised.
function outlinesToDraw() {
  const selected = currentImplant();
  return state.outlines ? currentImplants().filter((implant) => implant.found && implant.box).map((implant) =>
    ({position: implant.position, box: implant.box, selected: implant === selected})) : [];
}

// Where a decided case's chosen candidate lies: the X-ray and implant that ranked the chosen system at that rank.
function decidedPlace(detail) {
  const decision = detail.decision;
  if (!decision || !decision.chosen_rank) return null;
  for (const [index, image] of detail.images.entries()) {
    for (const implant of image.implants || []) {
      if (implant.candidates.some((c) => c.rank === decision.chosen_rank && c.implant_id === decision.implant_id)) {
        return {index, implant: implant.position};
      }
    }
  }
  return null;
}

// The row of implants under the X-ray tabs: each one's straightened crop and number.
function renderImplantChips() {
  const implants = currentImplants();
  if (!implants.length) return null;
  const selected = currentImplant();
  return h("div", {id: "implant-chips", class: "implant-chips", role: "group",
    "aria-label": "Implants on this X-ray (N: next)"}, implants.map((implant) => {
    const on = implant === selected;
    return h("button", {id: `implant-${implant.position}`, type: "button",
      class: `implant-chip${on ? " on" : ""}${implant.found ? "" : " not-found"}`, dataset: {implant: implant.position},
      "aria-pressed": String(on), onclick: () => selectImplant(implant.position),
      title: implant.found ? `${implantLabel(implant)}: its candidates and shape (N cycles)`
        : "No implant stood out: the whole film was compared"},
    h("span", {class: "implant-thumb"}, implant.crop_url
      ? h("img", {src: implant.crop_url, alt: `${implantLabel(implant)}, straightened, platform up`}) : null),
    h("span", {class: "implant-name"}, implantLabel(implant)),
    implant.found ? null : h("span", {class: "implant-note"}, "whole film"));
  }));
}

// Shown above the candidates when nothing implant-like stood out on the X-ray.
function renderNoImplantWarning() {
  const implants = currentImplants();
  if (!implants.length || implants[0].found) return null;
  return h("p", {id: "no-implant", class: "no-implant", role: "note"}, "No implant stood out on this X-ray: the "
    + "whole film was compared. Check the candidates carefully, or pick from the catalog.");
}

function shapeNumber(value, digits) {
  return typeof value === "number" ? value.toFixed(digits === undefined ? 0 : digits) : null;
}

function readText(value, digits) {
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") return digits === undefined ? String(value) : value.toFixed(digits);
  return String(value).replace(/-/g, " ");
}

const measuredValue = (row, side) => (row.measured && side.measured ? side.measured[row.measured] : undefined);
const readValue = (row, side) => (row.read && side.read && side.read.values ? side.read.values[row.read] : undefined);
const known = (value) => value !== undefined && value !== null;

// One side of a shape row: the measurement (with mm when known), then the reading with its confidence.
function shapeCell(row, side) {
  const measured = measuredValue(row, side);
  const read = readValue(row, side);
  const mm = row.mm && side.measured && side.measured.mm ? side.measured.mm[row.mm] : null;
  const confidence = side.read && side.read.confidence ? side.read.confidence[row.read] : null;
  const parts = [
    typeof measured === "number" ? h("span", {class: "measured"}, shapeNumber(measured, row.digits),
      typeof mm === "number" ? h("span", {class: "mm"}, ` ${mm.toFixed(2)} mm`) : null) : null,
    known(read) ? h("span", {class: "read"}, `read ${readText(read, row.digits)}`,
      typeof confidence === "number" ? ` (${Math.round(confidence * 100)} %)` : null) : null,
  ].filter(Boolean);
  return h("td", {}, parts.length ? parts : h("span", {class: "muted"}, "—"));
}

function shapeDiffers(row, mine, theirs) {
  const apart = (a, b) => (typeof a === "number" && typeof b === "number" ? Math.abs(a - b) > row.near : a !== b);
  const [m1, m2] = [measuredValue(row, mine), measuredValue(row, theirs)];
  const [r1, r2] = [readValue(row, mine), readValue(row, theirs)];
  return (typeof m1 === "number" && typeof m2 === "number" && apart(m1, m2)) || (known(r1) && known(r2) && apart(r1, r2));
}

// The selected implant's shape beside the picked candidate's reference implant (the decided one once decided).
// Not for the whole-film fallback: what it measures is no implant.
function renderShape() {
  const implant = currentImplant();
  if (!implant || !implant.found || !implant.measured) return null;
  const candidate = state.override ? null : chosenCandidate();
  const mine = {measured: implant.measured, read: implant.read};
  const theirs = candidate && (candidate.reference_measured || candidate.reference_read)
    ? {measured: candidate.reference_measured, read: candidate.reference_read} : null;
  const shown = (row, side) => known(measuredValue(row, side)) || known(readValue(row, side));
  const rows = SHAPE_ROWS.filter((row) => shown(row, mine) || (theirs && shown(row, theirs)));
  const millimetres = Boolean(implant.measured.mm);
  return h("section", {id: "shape", class: "shape", "aria-label": `Shape of ${implantLabel(implant).toLowerCase()}`},
    h("h3", {class: "section-title"}, `Shape — ${implantLabel(implant).toLowerCase()}`,
      theirs ? ` beside candidate ${candidate.rank}'s reference` : ""),
    h("table", {id: "shape-table", class: "shape-table"},
      h("caption", {}, "Ratios are to the implant's outer diameter (Ø), so size and magnification do not change them",
        millimetres ? "; millimetres from the X-ray's pixel spacing" : "",
        ". “read”: what the shape encoder reads off the straightened crop, with its confidence.",
        theirs ? " ≠: differs notably." : ""),
      h("thead", {}, h("tr", {}, h("th", {scope: "col"}, ""), h("th", {scope: "col"}, "This implant"),
        theirs ? h("th", {scope: "col"}, `${candidate.system} (reference)`) : null)),
      h("tbody", {}, rows.map((row) => {
        const differs = Boolean(theirs) && shapeDiffers(row, mine, theirs);
        return h("tr", {class: differs ? "differs" : null, dataset: {row: row.key}},
          h("th", {scope: "row", title: row.hint || null}, row.label,
            differs ? h("span", {class: "differs-mark", title: "Differs notably"}, " ≠") : null),
          shapeCell(row, mine), theirs ? shapeCell(row, theirs) : null);
      }))));
}

// The film, its tools and the comparison -----------------------------------------------------------

// What the film is compared with: a catalog system picked in the compare, a candidate picked there, else the
// candidate chosen (or decided).
function compareTarget() {
  const target = state.target;
  if (target && target.kind === "catalog") {
    return {item: target.implant, url: target.implant.reference_url, label: `Catalog · ${implantName(target.implant)}`};
  }
  const rank = target ? target.rank : null;
  const item = rank ? currentCandidates().find((c) => c.rank === rank) : chosenCandidate();
  return item ? {item, url: item.reference_url, label: `Candidate ${item.rank} · ${implantName(item)}`} : null;
}

function showFilm() {
  const number = state.imageIndex + 1;
  filmViewer.show(currentImage().url, `Case X-ray ${number}`, `X-ray ${number} of case ${state.current.case.id}`);
  filmViewer.setOutlines(outlinesToDraw());
  return filmViewer.root;
}

function showReference(target) {
  refViewer.show(target.url, target.label, `Reference X-ray of ${implantName(target.item)}`);
  if (!target.url) {
    refViewer.note.textContent = `The catalog has no reference image of ${implantName(target.item)} to show.`;
    refViewer.note.hidden = false;
  }
  return refViewer.root;
}

function renderXray() {
  const images = state.current.images;
  const image = currentImage();
  const tabs = images.length > 1 ? h("div", {class: "image-tabs"}, images.map((img, index) =>
    h("button", {type: "button", class: index === state.imageIndex ? "on" : "",
      onclick: () => {
        state.imageIndex = index;
        state.implant = 0;
        state.rank = 1;
        state.target = null;
        resetViews();
        renderCase();
      }},
    `X-ray ${index + 1}`))) : null;
  const target = compareTarget();
  let body;
  if (!images.length) {
    body = h("p", {class: "xray-missing"}, state.current.case.erased_at ? "The X-rays of this case were erased."
      : "This case has no X-ray.");
  } else if (!image.url) {
    body = h("p", {class: "xray-missing"}, `This X-ray could not be stored: ${image.error || "unknown error"}`);
  } else if (state.full) {
    body = h("p", {class: "xray-missing"}, "Shown in the full-screen compare (Esc closes it).");
  } else {
    body = state.compare && target ? h("div", {class: "compare"}, showFilm(), showReference(target)) : showFilm();
  }
  const spacing = image.pixel_spacing_mm;
  const caption = images.length ? [`X-ray ${state.imageIndex + 1} of ${images.length}`,
    image.width && `${image.width} × ${image.height} px`,
    spacing && `${spacing[0]} × ${spacing[1]} mm per pixel`,
    image.status === "failed" && `not readable: ${image.error}`].filter(Boolean).join(" · ") : "";
  const live = Boolean(image.url) && !state.full;
  return h("figure", {class: "xray"}, tabs, renderImplantChips(), live ? renderTools() : null, h("div", {class: "xray-frame"}, body),
    live ? renderMeasurements() : null,
    h("figcaption", {}, h("span", {}, caption), h("span", {class: "fig-actions"},
      target && target.url && !state.full ? h("button", {id: "compare", type: "button",
        class: `link${state.compare ? " on" : ""}`, onclick: toggleCompare},
      state.compare ? "Hide reference (C)" : "Compare with reference (C)") : null,
      image.url ? h("a", {href: image.url, target: "_blank", rel: "noopener noreferrer"}, "Open full size") : null)));
}

function toggleCompare() {
  const target = compareTarget();
  if (!state.compare && !(target && target.url)) return;
  state.compare = !state.compare;
  state.activePane = "film";
  renderCase();
}

function toggleFull(open = !state.full) {
  if (open && !(state.current && currentImage().url)) return;
  state.full = open;
  state.activePane = "film";
  renderCase();
  if (open) $("full-close").focus();
}

function setTarget(target) {
  state.target = target;
  if (!state.locked) state.views.ref = freshView();
  renderCase();
}

const TOOL_NAMES = {pan: ["Pan", "Drag to move the film"], ruler: ["Ruler", "Drag on the film to measure (M adds one)"],
  calibrate: ["Calibrate", "Drag along a known dimension, then enter its length in mm"]};

function renderTools() {
  const button = (id, label, title, onclick, pressed) => h("button", {id, type: "button", class: "tool", title,
    "aria-label": title, "aria-pressed": pressed === undefined ? null : String(pressed), onclick}, label);
  const slider = (id, label, attrs, onchange) => h("label", {class: "tool-slider"}, label,
    h("input", {id, type: "range", ...attrs, oninput: (event) => changeView((view) => onchange(view, Number(event.target.value)))}));
  return h("div", {class: "tools", role: "toolbar", "aria-label": "Image tools"},
    h("span", {class: "tool-group"},
      button("zoom-out", "−", "Zoom out (−)", () => activeViewer().zoomBy(1 / ZOOM_STEP)),
      h("span", {id: "zoom-level", class: "zoom-level"}, "100 %"),
      button("zoom-in", "+", "Zoom in (+)", () => activeViewer().zoomBy(ZOOM_STEP)),
      button("view-reset", "Reset", "Fit and reset every adjustment (0)", resetViews)),
    h("span", {class: "tool-group"},
      button("rotate-left", "⟲", "Rotate left ([)", () => rotate(-90)),
      button("rotate-right", "⟳", "Rotate right (])", () => rotate(90)),
      button("flip-h", "⇋", "Flip horizontally (H)", () => changeView((view) => { view.flipX = !view.flipX; }), false),
      button("flip-v", "⇅", "Flip vertically (V)", () => changeView((view) => { view.flipY = !view.flipY; }), false),
      button("invert", "Invert", "Invert (I)", () => changeView((view) => { view.invert = !view.invert; }), false),
      currentImplants().some((implant) => implant.found) ? button("outlines", "Outlines",
        "Show the outlines of the implants found (U)", toggleOutlines, state.outlines) : null),
    slider("brightness", "Brightness", {min: -0.5, max: 0.5, step: 0.01}, (view, value) => { view.brightness = value; }),
    slider("contrast", "Contrast", {min: -1.6, max: 1.6, step: 0.02}, (view, value) => { view.contrast = Math.exp(value); }),
    h("span", {class: "tool-group", role: "group", "aria-label": "What dragging on the film does"},
      Object.entries(TOOL_NAMES).map(([name, [label, title]]) =>
        button(`tool-${name}`, label, title, () => setTool(name), state.tool === name))),
    state.compare || state.full ? button("lock", "Lock", "Same zoom and pan for film and reference (L)", toggleLock,
      state.locked) : null,
    state.full ? null : button("full-open", "Full screen", "Full-screen compare with any candidate or system (F)",
      () => toggleFull(true)));
}

// The toolbar follows the view it acts on (after zooming by wheel, keys or a pinch).
function syncTools() {
  const view = activeView();
  for (const viewer of [filmViewer, refViewer]) viewer.root.dataset.tool = state.tool;
  if (!$("zoom-level")) return;
  $("zoom-level").textContent = `${Math.round(view.zoom * 100)} %`;
  $("brightness").value = String(view.brightness);
  $("contrast").value = String(Math.log(view.contrast));
  $("flip-h").setAttribute("aria-pressed", String(view.flipX));
  $("flip-v").setAttribute("aria-pressed", String(view.flipY));
  $("invert").setAttribute("aria-pressed", String(view.invert));
  for (const name of Object.keys(TOOL_NAMES)) $(`tool-${name}`).setAttribute("aria-pressed", String(state.tool === name));
  if ($("lock")) $("lock").setAttribute("aria-pressed", String(state.locked));
  if ($("outlines")) $("outlines").setAttribute("aria-pressed", String(state.outlines));
}

function setTool(name) {
  state.tool = name;
  syncTools();
}

// Rotation is clockwise on screen whatever the flips (one flip mirrors the turn).
function rotate(degrees) {
  changeView((view) => {
    const turn = view.flipX !== view.flipY ? -degrees : degrees;
    view.rotation = (view.rotation + turn + 360) % 360;
  });
}

function renderMeasurements() {
  const measure = currentMeasure();
  const rulers = measure ? measure.rulers : [];
  const mm = scale();
  const number = (id) => rulers.findIndex((ruler) => ruler.id === id) + 1;
  let scaleLine;
  if (mm && mm.source === "calibration") {
    scaleLine = [`Scale: ruler ${number(measure.calibration.ruler)} is ${measure.calibration.mm} mm `
      + `(${mm.row.toFixed(4)} mm per pixel). `, h("button", {id: "calibration-clear", type: "button", class: "link",
      onclick: () => { measure.calibration = null; measurementsChanged(); }}, "Clear calibration")];
  } else if (mm) {
    scaleLine = `Scale: ${mm.row} × ${mm.col} mm per pixel, from the X-ray's file. Calibrate to use another.`;
  } else {
    scaleLine = "No scale yet: rulers read pixels. Calibrate: drag along a known dimension and enter it in mm.";
  }
  const calibrating = state.calibrating && findRuler(state.calibrating);
  let form = null;
  if (calibrating) {
    const input = h("input", {id: "calibrate-mm", type: "number", min: 0.1, max: 199, step: 0.1, inputmode: "decimal",
      autocomplete: "off", onkeydown: (event) => { if (event.key === "Enter") set.click(); }});
    const set = h("button", {id: "calibrate-set", type: "button", class: "primary",
      onclick: () => setCalibration(calibrating.id, Number(input.value))}, "Set scale");
    setTimeout(() => input.focus(), 0);
    form = h("div", {class: "calibrate-form"},
      h("label", {class: "field"}, `Ruler ${number(calibrating.id)} (${Math.round(rulerPixels(calibrating))} px) `
        + "measures how many millimetres?", input),
      set, h("button", {type: "button", class: "link", onclick: () => { state.calibrating = null; renderCase(); }},
        "Cancel"));
  }
  const sizeButton = (ruler, size, label) => h("button", {id: `ruler-${ruler.id}-${size}`, type: "button",
    class: `chip size-${size}${measure[size] === ruler.id ? " on" : ""}`,
    "aria-pressed": String(measure[size] === ruler.id), onclick: () => assignRuler(ruler.id, size)}, label);
  return h("div", {id: "measure", class: "measure"},
    h("p", {id: "scale-status", class: "muted small"}, scaleLine),
    rulers.length ? h("ol", {class: "rulers"}, rulers.map((ruler, index) =>
      h("li", {class: `ruler-row${measure.selected === ruler.id ? " selected" : ""}`, dataset: {ruler: ruler.id}},
        h("span", {class: "ruler-n"}, index + 1),
        h("span", {class: "ruler-value"}, rulerText(ruler)),
        sizeButton(ruler, "length", "Implant length"), sizeButton(ruler, "diameter", "Diameter"),
        h("button", {id: `ruler-${ruler.id}-calibrate`, type: "button", class: "chip ruler-calibrate",
          onclick: () => { state.calibrating = ruler.id; renderCase(); }}, "Calibrate…"),
        h("button", {id: `ruler-${ruler.id}-delete`, type: "button", class: "link ruler-delete",
          "aria-label": `Delete ruler ${index + 1}`,
          onclick: () => removeRuler(ruler.id)}, "Delete")))) : null,
    form);
}

// A line under the candidates saying what the sizes were compared with.
function sizeSummary() {
  const measured = measuredSizes();
  const parts = [measured.length !== null && `length ${measured.length.toFixed(1)} mm`,
    measured.diameter !== null && `diameter ${measured.diameter.toFixed(1)} mm`].filter(Boolean);
  if (!parts.length) return null;
  return h("p", {id: "size-summary", class: "size-summary", role: "note"}, `Measured ${parts.join(", ")}. `
    + `Systems whose catalog sizes miss it by more than ${SIZE_TOLERANCE_MM} mm are marked; magnification and `
    + "angulation distort films, so take it as a hint.");
}

// The size line of a candidate or catalog result, with its verdict.
function sizeLine(item) {
  const check = sizeCheck(item);
  const ranges = sizeRanges(item);
  if (!ranges && !check.text) return null;
  return h("span", {class: `sizes${check.verdict ? ` ${check.verdict}` : ""}`},
    check.text || ranges, check.text ? h("span", {class: "muted"}, ` (catalog: ${ranges})`) : null);
}

function renderFull() {
  const item = state.current.case;
  const decided = Boolean(state.current.decision);
  const target = compareTarget();
  const results = h("ul", {id: "full-results", class: "catalog-results full-results", hidden: true});
  const search = h("input", {id: "full-search", type: "search", autocomplete: "off",
    placeholder: "Compare with any system, e.g. straumann bl", "aria-label": "Search the catalog to compare",
    oninput: (event) => {
      results.hidden = !event.target.value.trim();
      if (!results.hidden) searchCatalog(event.target.value, results, (implant) => setTarget({kind: "catalog", implant}));
    }});
  const picked = state.target && state.target.kind === "catalog" ? state.target.implant : null;
  return h("div", {id: "full-compare", class: "full-compare", role: "dialog", "aria-modal": "true",
    "aria-label": `Full-screen compare of case ${item.id}`},
    h("div", {class: "full-head"},
      h("h2", {}, `Case #${item.id} · X-ray ${state.imageIndex + 1}`,
        currentImplants().length > 1 ? ` · ${implantLabel(currentImplant())}` : ""),
      h("div", {class: "targets", role: "group", "aria-label": "Compare with"},
        currentCandidates().map((candidate) => {
          const on = target && !picked && target.item.rank === candidate.rank;
          const check = sizeCheck(candidate);
          return h("button", {id: `target-${candidate.rank}`, type: "button", class: `target${on ? " on" : ""}${check.verdict ? ` size-${check.verdict}` : ""}`,
            dataset: {rank: candidate.rank}, "aria-pressed": String(Boolean(on)), title: check.text || sizeRanges(candidate),
            onclick: () => setTarget({kind: "candidate", rank: candidate.rank})},
          h("kbd", {}, candidate.rank), implantName(candidate));
        }),
        h("span", {class: "full-search"}, search, results)),
      picked && !decided && state.current.case.status === "ready" ? h("button", {id: "full-override", type: "button",
        onclick: () => { state.override = picked; state.full = false; renderCase(); }},
      `Approve ${implantName(picked)} instead…`) : null,
      h("button", {id: "full-close", type: "button", class: "link", onclick: () => toggleFull(false)}, "Close (Esc)")),
    renderTools(),
    h("div", {class: "full-panes"}, showFilm(), target ? showReference(target)
      : h("p", {class: "xray-missing"}, "Pick a candidate or search the catalog to compare with.")),
    h("div", {class: "full-foot"}, renderMeasurements(), target ? sizeLine(target.item) : null));
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
    state.implant = 0;
    const place = decidedPlace(detail);
    if (place) {
      state.imageIndex = place.index;
      state.implant = place.implant;
    }
    state.rank = 1;
    state.override = null;
    state.panel = null;
    state.note = "";
    state.reason = "";
    state.erasing = false;
    state.target = null;
    state.calibrating = null;
    state.views = {film: freshView(), ref: freshView()};
  }
  renderCase();
  renderList();
}

function currentImage() {
  return state.current.images[state.imageIndex] || {candidates: [], implants: []};
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
  const focused = document.activeElement;  // a ruler's handle moves with the re-render and keeps the focus
  fill(view,
    h("div", {class: "case-head"},
      h("div", {}, h("h2", {}, `Case #${item.id}`), h("p", {class: "muted"}, meta)),
      h("span", {class: "badges"}, item.erased_at ? h("span", {class: "badge big erased"}, "erased") : null,
        h("span", {class: `badge big ${item.status}`}, item.status))),
    item.erased_at ? h("p", {class: "erased-note", role: "note"}, `Patient data erased ${when(item.erased_at)}: `
      + "the X-rays, the submitter's details and free texts are gone; the decision stays, anonymous.") : null,
    h("div", {class: "case-body"}, renderXray(), h("div", {class: "decide"},
      renderNoImplantWarning(), renderCandidates(decided), renderShape(), sizeSummary(), next, renderRecord())),
    state.full ? renderFull() : null);
  setModal(state.full);
  // Controls are rebuilt on every render: the one that had the focus (same id, or the same ruler handle) keeps it.
  if (focused && !focused.isConnected && focused.id && $(focused.id)) $(focused.id).focus();
  else if (focused && focused.isConnected && focused.closest(".viewer") && document.activeElement !== focused) focused.focus();
  syncTools();
  for (const viewer of viewers()) viewer.render();
}

// The full-screen compare is modal: what lies behind it takes neither clicks nor the focus.
function setModal(open) {
  document.body.classList.toggle("full-open", open);
  for (const node of [document.querySelector(".topbar"), document.querySelector(".sidebar"), $("system-panel"),
    document.querySelector(".keys"), ...$("case-view").children]) {
    node.inert = open && node.id !== "full-compare";
  }
}

// A case whose intake failed for good: the reason, a retry, or an answer to the clinic (a rejection with a
// message, delivered as any decision).
const FAILED_MESSAGE = "We could not read the X-ray you sent, so the implant could not be identified. "
  + "Please send the film again as a JPEG, PNG, TIFF or DICOM file.";

function renderAttention() {
  const item = state.current.case;
  const message = h("textarea", {id: "failed-message", rows: 4, maxlength: 2000,
    "aria-describedby": "failed-message-help", oninput: (event) => { state.reason = event.target.value; }});
  message.value = state.reason || FAILED_MESSAGE;
  return h("div", {class: "attention-card"},
    h("p", {}, h("strong", {}, "Intake failed: "), item.error || "no reason recorded"),
    h("p", {class: "muted small"}, "Retry fetches its failed X-rays again (those sent as links) and embeds the case."),
    h("button", {id: "retry-case", type: "button", class: "primary", onclick: () => retryCase().catch(failed)},
      "Retry intake"),
    h("div", {class: "panel reject"},
      h("label", {class: "field"}, "Message to the clinic", message),
      h("p", {id: "failed-message-help", class: "muted small"},
        "Or reject the case: the clinic receives this message the way it receives any decision."),
      h("div", {class: "panel-actions"},
        h("button", {id: "reject-failed", type: "button", class: "danger", onclick: () => rejectFailed().catch(failed)},
          "Reject and tell the clinic"))));
}

async function rejectFailed() {
  const reason = $("failed-message").value.trim();
  if (!reason) {
    showMessage("Write a message for the clinic before rejecting.");
    $("failed-message").focus();
    return;
  }
  const caseId = state.current.case.id;
  $("reject-failed").disabled = true;
  try {
    await api("POST", `/cases/${caseId}/decision`, {action: "reject", reason});
    showMessage(`Case #${caseId} rejected: the clinic will receive your message.`, "success");
  } finally {
    await loadList();
    await openCase(caseId);
  }
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

function renderCandidates(decided) {
  const candidates = currentCandidates();
  if (!candidates.length) {
    return state.current.case.status === "ready" && !decided ? h("div", {class: "candidates-empty"},
      "No candidates for this X-ray. Pick an implant from the catalog or reject.") : null;
  }
  const decision = state.current.decision;
  const chosen = (candidate) => candidate.rank === decision.chosen_rank && candidate.implant_id === decision.implant_id;
  const implants = currentImplants();
  const title = implants.length > 1 ? ` of ${implantLabel(currentImplant()).toLowerCase()}` : "";
  return h("div", {},
    h("h3", {class: "section-title"}, decided ? `Candidates${title}` : `Candidates${title} — pick the implant you see`),
    (currentImplant() || currentImage()).low_confidence
      ? h("p", {class: "low-confidence", role: "note"},
          "Low confidence: the best candidates are close together. Compare carefully before approving.")
      : null,
    h("ol", {class: "candidates"}, candidates.map((candidate) => {
      const selected = decided ? chosen(candidate) : !state.override && candidate.rank === state.rank;
      const thumb = candidate.reference_crop_url || candidate.reference_url;
      const verdict = sizeCheck(candidate).verdict;
      return h("li", {},
        h("button", {type: "button", class: `candidate${selected ? " selected" : ""}${verdict ? ` size-${verdict}` : ""}`,
          disabled: decided,
          dataset: {rank: candidate.rank}, "aria-pressed": String(selected),
          onclick: () => pick(candidate.rank)},
          h("span", {class: "key"}, candidate.rank),
          h("span", {class: `thumb${candidate.reference_crop_url ? " crop" : ""}`}, thumb
            ? h("img", {src: thumb, loading: "lazy", alt: candidate.reference_crop_url
              ? `Reference implant of ${implantName(candidate)}, straightened, platform up`
              : `Reference X-ray of ${implantName(candidate)}`})
            : h("span", {class: "muted"}, "no image")),
          h("span", {class: "cand-text"},
            h("span", {class: "maker"}, candidate.manufacturer),
            h("span", {class: "system"}, candidate.system),
            h("span", {class: "sim"}, `similarity ${similarity(candidate.similarity)}`),
            sizeLine(candidate))));
    })));
}

// The candidate shown for comparison: the decided one, else the one picked.
function chosenCandidate() {
  if (!state.current) return null;
  const decision = state.current.decision;
  const rank = decision ? decision.chosen_rank : (state.override ? null : state.rank);
  return currentCandidates().find((c) => c.rank === rank) || null;
}

function selectedImplantLabel() {
  if (state.override) return implantName(state.override);
  const candidate = currentCandidates().find((c) => c.rank === state.rank);
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

function pickOverride(implant) {
  state.override = implant;
  state.panel = null;
  renderCase();
  $("approve").focus();
}

async function searchCatalog(query, results, onPick = pickOverride) {
  const seq = ++searchSeq;
  try {
    const data = await api("GET", `/catalog?q=${encodeURIComponent(query)}`);
    if (seq !== searchSeq) return;
    results.replaceChildren(...(data.implants.length ? data.implants.map((implant) => {
      const verdict = sizeCheck(implant).verdict;
      return h("li", {}, h("button", {type: "button", class: `catalog-item${verdict ? ` size-${verdict}` : ""}`,
        dataset: {implantId: implant.id}, onclick: () => onPick(implant)},
        h("span", {}, h("span", {class: "maker"}, implant.manufacturer), " ", h("strong", {}, implant.system)),
        h("span", {class: "catalog-meta"}, h("span", {class: "muted"}, [implant.implant_type, implant.connection,
          `${implant.references} reference(s)`].filter(Boolean).join(" · ")), sizeLine(implant))));
    }) : [h("li", {class: "muted empty-row"}, "No implant matches.")]));
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

// What an operator should look at: the catalog's warnings, stale heartbeats, jobs failed for good, failed
// deliveries, failed cases, reconciliation errors.
function systemProblems(status) {
  const problems = [...(status.warnings || [])];  // the catalog is empty, or the encoder in use has no references
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
  if (!currentCandidates().some((c) => c.rank === rank)) return;
  state.rank = rank;
  state.override = null;
  state.target = null;
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
  const implant = currentImplant();
  const body = state.override ? {action: "approve", implant_id: state.override.id}
    : {action: "approve", rank: state.rank, image_id: currentImage().id, ...(implant ? {implant: implant.position} : {})};
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

// The viewer's keys (outside text fields): they act on the film, or on the pane last touched when unlocked.
const VIEW_KEYS = {
  "+": () => activeViewer().zoomBy(ZOOM_STEP),
  "=": () => activeViewer().zoomBy(ZOOM_STEP),
  "-": () => activeViewer().zoomBy(1 / ZOOM_STEP),
  "0": resetViews,
  "[": () => rotate(-90),
  "]": () => rotate(90),
  h: () => changeView((view) => { view.flipX = !view.flipX; }),
  v: () => changeView((view) => { view.flipY = !view.flipY; }),
  i: () => changeView((view) => { view.invert = !view.invert; }),
  b: () => changeView((view) => { view.brightness = clamp(view.brightness + BRIGHTNESS_STEP, -0.5, 0.5); }),
  B: () => changeView((view) => { view.brightness = clamp(view.brightness - BRIGHTNESS_STEP, -0.5, 0.5); }),
  x: () => changeView((view) => { view.contrast = clamp(view.contrast * CONTRAST_STEP, 0.2, 5); }),
  X: () => changeView((view) => { view.contrast = clamp(view.contrast / CONTRAST_STEP, 0.2, 5); }),
  l: () => { if (state.compare || state.full) toggleLock(); },
  u: () => { if (currentImplants().some((implant) => implant.found)) toggleOutlines(); },
  f: () => toggleFull(),
  m: keyboardRuler,
  ArrowLeft: () => panBy(1, 0),
  ArrowRight: () => panBy(-1, 0),
  ArrowUp: () => panBy(0, 1),
  ArrowDown: () => panBy(0, -1),
};

// Arrow keys look around a zoomed film (← shows more of its left), a tenth of the pane per press.
function panBy(right, down) {
  const viewer = activeViewer();
  if (!viewer.natural) return;
  const pane = viewer.size();
  changeView((view) => {
    view.x += right * pane.w * PAN_STEP;
    view.y += down * pane.h * PAN_STEP;
  });
}

function onKey(event) {
  if ($("app").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  const field = event.target;
  // A focused slider keeps its own arrow keys, and lets the letter shortcuts through.
  const slider = field.tagName === "INPUT" && field.type === "range";
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(field.tagName) && !(slider && event.key.length === 1);
  if (event.key === "Escape") {
    event.preventDefault();
    if (state.calibrating) { state.calibrating = null; renderCase(); }
    else if (!$("system-panel").hidden) toggleSystem(false);
    else if (state.full) toggleFull(false);
    else if (state.erasing) { state.erasing = false; renderCase(); }
    else if (state.panel) closePanel();
    else hideMessage();
    return;
  }
  if (typing || !state.current) return;
  const handle = event.target.closest && event.target.closest(".ruler-handle");
  if (handle && event.key.startsWith("Arrow")) {
    nudgeHandle(handle, event.key, event.shiftKey);
    event.preventDefault();
    return;
  }
  if (handle && (event.key === "Delete" || event.key === "Backspace")) {
    removeRuler(Number(handle.dataset.ruler));
    event.preventDefault();
    return;
  }
  const key = event.key.length === 1 && !"BXN".includes(event.key) ? event.key.toLowerCase() : event.key;
  const image = currentImage();
  if (VIEW_KEYS[key] && image.url) {
    VIEW_KEYS[key]();
  } else if (key === "n" || key === "N") {
    cycleImplant(key === "n" ? 1 : -1);
  } else if (state.full) {  // the full-screen compare is modal: digits pick what the film is compared with
    if (currentCandidates().some((c) => String(c.rank) === key)) setTarget({kind: "candidate", rank: Number(key)});
    else if (key === "/") $("full-search").focus();
    else return;
  } else if (["1", "2", "3", "4", "5"].includes(key)) pick(Number(key));
  else if (key === "a") approve().catch(failed);
  else if (key === "r") openPanel("reject");
  else if (key === "o" || key === "/") openPanel("override");
  else if (key === "c") toggleCompare();
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

filmViewer = new Viewer("film", true);
refViewer = new Viewer("ref", false);
if (state.token) showApp().catch(failed);
else showLogin();
