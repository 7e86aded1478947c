// Deciding the open case: picking a candidate or a catalog system, approving, rejecting, redelivering.

import {api, failed} from "./api.js";
import {openCase, renderCase} from "./case.js";
import {$, h, implantName, showMessage, when} from "./dom.js";
import {sizeCheck, sizeLine} from "./measure.js";
import {DELIVERY_LABELS, loadList, nextCase, refreshAfterConflict} from "./queue.js";
import {currentCandidates, currentImage, currentImplant, state} from "./state.js";

const QUICK_REASONS = ["X-ray too blurred to identify", "No implant visible", "Implant system not in the catalog",
  "Several implants: send one X-ray per implant"];

function selectedImplantLabel() {
  if (state.override) return implantName(state.override);
  const candidate = currentCandidates().find((c) => c.rank === state.rank);
  return candidate ? implantName(candidate) : null;
}

export function renderActions() {
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

export async function searchCatalog(query, results, onPick = pickOverride) {
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

export function renderDecision() {
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

export function pick(rank) {
  if (!state.current || state.current.decision) return;
  if (!currentCandidates().some((c) => c.rank === rank)) return;
  state.rank = rank;
  state.override = null;
  state.target = null;
  renderCase();
}

export function openPanel(panel) {
  if (!state.current || state.current.decision) return;
  state.panel = state.panel === panel ? null : panel;
  renderCase();
}

export function closePanel() {
  state.panel = null;
  renderCase();
}

export async function approve() {
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
