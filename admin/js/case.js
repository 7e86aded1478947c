// The open case: loading and rendering it, its candidates, the failed-intake card, its history and erasure.

import {api, failed} from "./api.js";
import {renderFull, renderXray, syncTools} from "./compare.js";
import {pick, renderActions, renderDecision} from "./decide.js";
import {$, fill, h, implantName, showMessage, similarity, when} from "./dom.js";
import {decidedPlace, implantLabel, renderNoImplantWarning, renderShape} from "./implants.js";
import {sizeCheck, sizeLine, sizeSummary} from "./measure.js";
import {loadList, renderList} from "./queue.js";
import {currentCandidates, currentImage, currentImplant, currentImplants, freshView, state} from "./state.js";
import {viewers} from "./viewer.js";

const HISTORY_LABELS = {"case.viewed": "opened the case and its X-rays", "case.approved": "approved",
  "case.rejected": "rejected", "case.redeliver": "queued the delivery again", "case.retry": "retried intake",
  "case.erased": "erased the patient data", "case.fetched": "fetched the X-rays", "fetch_failed": "gave up fetching"};

let openSeq = 0;

// Opens (or refreshes) a case. Reopening the case on screen keeps the reviewer's picks, panel and text.
export async function openCase(caseId) {
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

export function renderCase() {
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
export function setModal(open) {
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
