// Keyboard shortcuts: the viewer's keys and the reviewer's (pick, approve, reject, compare, next case).

import {failed} from "./api.js";
import {renderCase} from "./case.js";
import {rotate, setTarget, toggleCompare, toggleFull} from "./compare.js";
import {approve, closePanel, openPanel, pick} from "./decide.js";
import {$, hideMessage} from "./dom.js";
import {cycleImplant, toggleOutlines} from "./implants.js";
import {keyboardRuler, nudgeHandle, removeRuler} from "./measure.js";
import {step} from "./queue.js";
import {currentCandidates, currentImage, currentImplants, state} from "./state.js";
import {toggleSystem} from "./system.js";
import {ZOOM_STEP, activeViewer, changeView, clamp, resetViews, toggleLock} from "./viewer.js";

const PAN_STEP = 0.1;          // of the pane, per arrow key
const BRIGHTNESS_STEP = 0.05;
const CONTRAST_STEP = 1.15;

// The viewer's keys (outside text fields): they act on the film, or on the pane last touched when unlocked.
const VIEW_KEYS = {
  "+": () => activeViewer().zoomBy(ZOOM_STEP),
  "=": () => activeViewer().zoomBy(ZOOM_STEP),
  "-": () => activeViewer().zoomBy(1 / ZOOM_STEP),
  "0": () => resetViews(),
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
  m: () => keyboardRuler(),
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

export function onKey(event) {
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
