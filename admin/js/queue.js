// The case lists on the left (queue, needs attention, decided), their counts, and moving through them.

import {api, failed} from "./api.js";
import {openCase} from "./case.js";
import {$, h, implantName, similarity, when} from "./dom.js";
import {state} from "./state.js";

const PAGE_SIZE = 50;

// One word per state, as the API, the CLI and docs/review.md#states say it ("processing": received + embedding).
const STATUS_LABELS = [["ready", "Ready"], ["processing", "Processing"], ["approved", "Approved"],
  ["rejected", "Rejected"], ["notified", "Notified"], ["failed", "Failed"]];
export const DELIVERY_LABELS = {queued: "Delivery queued", sending: "Sending", retrying: "Retrying delivery",
  notified: "Notified", failed: "Delivery failed", none: "Not queued"};
// The side lists: which statuses each shows and what it says when empty.
export const TABS = {
  queue: {status: "ready", empty: "The queue is empty. New X-rays appear here when they are ready."},
  attention: {status: "failed", empty: "Nothing needs attention: every case got through intake."},
  decided: {status: "decided", empty: "No decisions yet."},
};

export function selectTab(tab) {
  state.tab = tab;
  for (const name of Object.keys(TABS)) $(`tab-${name}`).setAttribute("aria-selected", String(tab === name));
}

export async function loadList({openFirst = false, append = false} = {}) {
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

export function renderList() {
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

// After a decision: the case leaves the queue and the next one opens.
export async function nextCase(decidedId) {
  const index = state.cases.findIndex((item) => item.id === decidedId);
  state.current = null;
  await loadList();
  if (state.tab !== "queue") return;
  const next = state.cases[Math.min(Math.max(index, 0), state.cases.length - 1)];
  if (next) await openCase(next.id);
  else showEmpty();
}

export async function refreshAfterConflict(caseId) {
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

export function step(offset) {
  if (!state.cases.length) return;
  const index = state.current ? state.cases.findIndex((item) => item.id === state.current.case.id) : -1;
  const next = state.cases[Math.min(state.cases.length - 1, Math.max(0, index + offset))];
  if (next && (!state.current || next.id !== state.current.case.id)) openCase(next.id).catch(failed);
}
