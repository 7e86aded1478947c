// The film and reference viewers: one SVG per pane, its view (zoom, pan, turn, flips, window/level) and gestures.

import {syncTools} from "./compare.js";
import {h, svg} from "./dom.js";
import {
  addRuler, drawRulers, findRuler, measurementsChanged, removeRuler, rulerPixels, selectRuler,
} from "./measure.js";
import {freshView, state} from "./state.js";

// An SVG per pane: the image sits in a group whose transform attribute holds the view (fit, zoom, pan, rotation,
// flips) and whose filter does brightness, contrast and invert; the implants' outlines sit in that group too (film
// pixels), their numbers and the rulers are drawn over it in screen space. SVG attributes are not styles, so the
// strict policy (style-src 'self') has nothing to block.

const ZOOM_MIN = 0.5;
const ZOOM_MAX = 40;
export const ZOOM_STEP = 1.25;

// Affine matrices as SVG's matrix(a b c d e f): x' = a·x + c·y + e, y' = b·x + d·y + f.
const multiply = (m, n) => [m[0] * n[0] + m[2] * n[1], m[1] * n[0] + m[3] * n[1], m[0] * n[2] + m[2] * n[3],
  m[1] * n[2] + m[3] * n[3], m[0] * n[4] + m[2] * n[5] + m[4], m[1] * n[4] + m[3] * n[5] + m[5]];
export const applyTo = (m, p) => ({x: m[0] * p.x + m[2] * p.y + m[4], y: m[1] * p.x + m[3] * p.y + m[5]});
export function inverse(m) {
  const det = m[0] * m[3] - m[1] * m[2];
  return [m[3] / det, -m[1] / det, -m[2] / det, m[0] / det, (m[2] * m[5] - m[3] * m[4]) / det,
    (m[1] * m[4] - m[0] * m[5]) / det];
}
export const clamp = (value, low, high) => Math.min(high, Math.max(low, value));

// The film and the compared reference share one view while locked; unlocked, each has its own.
function viewOf(pane) {
  return pane === "film" || state.locked ? state.views.film : state.views.ref;
}

// Keys and toolbar act on the pane last touched (the film unless the reference was, unlocked).
export function activeView() {
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
    if (this.measuring) drawRulers(this, m);
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
}

const midpoint = (a, b) => ({x: (a.x + b.x) / 2, y: (a.y + b.y) / 2});

export let filmViewer = null;
export let refViewer = null;

// Made by main.js once the modules are loaded, as the page starts.
export function createViewers() {
  filmViewer = new Viewer("film", true);
  refViewer = new Viewer("ref", false);
}

export function viewers() {
  return [filmViewer, refViewer].filter((viewer) => viewer && viewer.root.isConnected);
}

function viewChanged() {
  for (const viewer of viewers()) viewer.render();
  syncTools();
}

export function resetViews() {
  state.views = {film: freshView(), ref: freshView()};
  viewChanged();
}

export function changeView(change) {
  change(activeView());
  viewChanged();
}

export function activeViewer() {
  return (state.compare || state.full) && state.activePane === "ref" && !state.locked ? refViewer : filmViewer;
}

export function toggleLock() {
  state.locked = !state.locked;
  if (!state.locked) state.views.ref = {...state.views.film};  // unlocking leaves both where they are
  viewChanged();
}
