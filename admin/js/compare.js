// The X-ray figure, its toolbar, and comparing the film with a reference: side by side or full screen.

import {renderCase} from "./case.js";
import {searchCatalog} from "./decide.js";
import {$, h, implantName} from "./dom.js";
import {implantLabel, outlinesToDraw, renderImplantChips, toggleOutlines} from "./implants.js";
import {renderMeasurements, sizeCheck, sizeLine, sizeRanges} from "./measure.js";
import {
  chosenCandidate, currentCandidates, currentImage, currentImplant, currentImplants, freshView, state,
} from "./state.js";
import {
  ZOOM_STEP, activeView, activeViewer, changeView, filmViewer, refViewer, resetViews, toggleLock,
} from "./viewer.js";

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

export function renderXray() {
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

export function toggleCompare() {
  const target = compareTarget();
  if (!state.compare && !(target && target.url)) return;
  state.compare = !state.compare;
  state.activePane = "film";
  renderCase();
}

export function toggleFull(open = !state.full) {
  if (open && !(state.current && currentImage().url)) return;
  state.full = open;
  state.activePane = "film";
  renderCase();
  if (open) $("full-close").focus();
}

export function setTarget(target) {
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
export function syncTools() {
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
export function rotate(degrees) {
  changeView((view) => {
    const turn = view.flipX !== view.flipY ? -degrees : degrees;
    view.rotation = (view.rotation + turn + 360) % 360;
  });
}

export function renderFull() {
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
