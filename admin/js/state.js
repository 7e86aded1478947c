// The page's one mutable state, and what it says is on screen: the open case's X-ray, implant and candidates.

export const state = {
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

export function freshView() {
  return {zoom: 1, x: 0, y: 0, rotation: 0, flipX: false, flipY: false, brightness: 0, contrast: 1, invert: false};
}

export function currentImage() {
  return state.current.images[state.imageIndex] || {candidates: [], implants: []};
}

export function currentImplants() {
  return currentImage().implants || [];
}

// The implant whose candidates are shown: the one picked, else the most implant-like; null on older cases.
export function currentImplant() {
  const implants = currentImplants();
  return implants.find((implant) => implant.position === state.implant) || implants[0] || null;
}

// The candidates on screen: the selected implant's, or the X-ray's own on a case from before implants.
export function currentCandidates() {
  const implant = currentImplant();
  return implant ? implant.candidates : currentImage().candidates;
}

// The candidate shown for comparison: the decided one, else the one picked.
export function chosenCandidate() {
  if (!state.current) return null;
  const decision = state.current.decision;
  const rank = decision ? decision.chosen_rank : (state.override ? null : state.rank);
  return currentCandidates().find((c) => c.rank === rank) || null;
}
