// Rulers on the film, the scale (file or calibration), and measured sizes against the catalog's ranges.

import {renderCase} from "./case.js";
import {h, showMessage, svg} from "./dom.js";
import {currentImage, state} from "./state.js";
import {applyTo, clamp, filmViewer, inverse} from "./viewer.js";

// Per X-ray (kept while the page is open): rulers in image pixels, which one is selected, which says the
// implant's length or diameter, and which one calibrates the scale.

const SIZE_TOLERANCE_MM = 0.5; // a measurement this far outside a catalog range still counts as within it

export const measures = new Map();
let rulerIds = 0;

function currentMeasure(create = false) {
  const image = state.current && currentImage();
  if (!image || !image.id) return null;
  if (!measures.has(image.id) && create) {
    measures.set(image.id, {rulers: [], selected: null, length: null, diameter: null, calibration: null});
  }
  return measures.get(image.id) || null;
}

export function findRuler(id) {
  const measure = currentMeasure();
  return measure ? measure.rulers.find((ruler) => ruler.id === id) || null : null;
}

export function addRuler(a, b) {
  const measure = currentMeasure(true);
  const ruler = {id: ++rulerIds, a, b};
  measure.rulers.push(ruler);
  measure.selected = ruler.id;
  return ruler;
}

export function removeRuler(id, render = true) {
  const measure = currentMeasure();
  if (!measure) return;
  measure.rulers = measure.rulers.filter((ruler) => ruler.id !== id);
  for (const key of ["selected", "length", "diameter"]) if (measure[key] === id) measure[key] = null;
  if (measure.calibration && measure.calibration.ruler === id) measure.calibration = null;
  if (state.calibrating === id) state.calibrating = null;
  if (render) measurementsChanged();
}

export function selectRuler(id, render = true) {
  const measure = currentMeasure();
  if (!measure || measure.selected === id) return;
  measure.selected = id;
  if (render) filmViewer.render();
}

export const rulerPixels = (ruler) => Math.hypot(ruler.b.x - ruler.a.x, ruler.b.y - ruler.a.y);

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
export function sizeCheck(item) {
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

export function sizeRanges(item) {
  return [item.diameter_mm && `Ø ${rangeText(item.diameter_mm)} mm`, item.length_mm && `L ${rangeText(item.length_mm)} mm`]
    .filter(Boolean).join(" · ");
}

export function measurementsChanged() {
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
export function keyboardRuler() {
  if (!filmViewer || !filmViewer.natural || !currentImage().id) return;
  const pane = filmViewer.size();
  const half = Math.min(pane.w, pane.h) / 8;
  const ruler = addRuler(filmViewer.toImage({x: pane.w / 2 - half, y: pane.h / 2}),
    filmViewer.toImage({x: pane.w / 2 + half, y: pane.h / 2}));
  measurementsChanged();
  const handle = filmViewer.overlay.querySelector(`.ruler-handle[data-ruler="${ruler.id}"][data-end="b"]`);
  if (handle) handle.focus();
}

export function nudgeHandle(handle, key, big) {
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

// Rulers in screen space (constant line width and handle size at any zoom); their elements are kept between
// renders so a focused handle stays focused while the arrow keys move it.
export function drawRulers(viewer, m) {
  const measure = currentMeasure();
  const alive = new Set();
  for (const [index, ruler] of (measure ? measure.rulers : []).entries()) {
    alive.add(ruler.id);
    let mark = viewer.marks.get(ruler.id);
    if (!mark) {
      const handle = (end) => svg("circle", {class: "ruler-handle", r: 9, tabindex: 0, "data-ruler": ruler.id,
        "data-end": end, "aria-label": `Ruler ${index + 1}, ${end === "a" ? "start" : "end"}: arrow keys move it, `
          + "Shift for 10 pixels"});
      mark = {line: svg("line", {class: "ruler-line"}), text: svg("text", {class: "ruler-label"}),
        a: handle("a"), b: handle("b")};
      mark.group = svg("g", {class: "ruler", "data-ruler": ruler.id}, mark.line, mark.a, mark.b, mark.text);
      for (const end of ["a", "b"]) mark[end].addEventListener("focus", () => selectRuler(ruler.id, false));
      viewer.overlay.append(mark.group);
      viewer.marks.set(ruler.id, mark);
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
  for (const [id, mark] of viewer.marks) {
    if (!alive.has(id)) {
      mark.group.remove();
      viewer.marks.delete(id);
    }
  }
}

export function renderMeasurements() {
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
export function sizeSummary() {
  const measured = measuredSizes();
  const parts = [measured.length !== null && `length ${measured.length.toFixed(1)} mm`,
    measured.diameter !== null && `diameter ${measured.diameter.toFixed(1)} mm`].filter(Boolean);
  if (!parts.length) return null;
  return h("p", {id: "size-summary", class: "size-summary", role: "note"}, `Measured ${parts.join(", ")}. `
    + `Systems whose catalog sizes miss it by more than ${SIZE_TOLERANCE_MM} mm are marked; magnification and `
    + "angulation distort films, so take it as a hint.");
}

// The size line of a candidate or catalog result, with its verdict.
export function sizeLine(item) {
  const check = sizeCheck(item);
  const ranges = sizeRanges(item);
  if (!ranges && !check.text) return null;
  return h("span", {class: `sizes${check.verdict ? ` ${check.verdict}` : ""}`},
    check.text || ranges, check.text ? h("span", {class: "muted"}, ` (catalog: ${ranges})`) : null);
}
