// The implants found on an X-ray: picking one, their outlines and chips, and the shape table.

import {renderCase} from "./case.js";
import {h} from "./dom.js";
import {chosenCandidate, currentImplant, currentImplants, state} from "./state.js";

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

export const implantLabel = (implant) => `Implant ${implant.position + 1}`;

function selectImplant(position) {
  if (!currentImplants().some((implant) => implant.position === position)) return;
  state.implant = position;
  state.rank = 1;
  state.target = null;
  renderCase();
}

export function cycleImplant(step) {
  const implants = currentImplants();
  if (implants.length < 2) return;
  const index = implants.indexOf(currentImplant());
  selectImplant(implants[(index + step + implants.length) % implants.length].position);
}

export function toggleOutlines() {
  state.outlines = !state.outlines;
  renderCase();
}

// What the film viewer outlines: every implant found (not the whole-film fallback), the selected one emphasised.
export function outlinesToDraw() {
  const selected = currentImplant();
  return state.outlines ? currentImplants().filter((implant) => implant.found && implant.box).map((implant) =>
    ({position: implant.position, box: implant.box, selected: implant === selected})) : [];
}

// Where a decided case's chosen candidate lies: the X-ray and implant that ranked the chosen system at that rank.
export function decidedPlace(detail) {
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
export function renderImplantChips() {
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
export function renderNoImplantWarning() {
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
export function renderShape() {
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
