// The system panel: jobs, heartbeats, deliveries and reconciliation from GET /status, and its alerts badge.

import {api, failed} from "./api.js";
import {$, fill, h, when} from "./dom.js";
import {state} from "./state.js";

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

export async function loadSystem() {
  state.system = await api("GET", "/status");
  const problems = systemProblems(state.system);
  const badge = $("system-open");
  badge.classList.toggle("alert", problems.length > 0);
  $("system-label").textContent = problems.length ? `System · ${problems.length} alert${problems.length === 1 ? "" : "s"}`
    : "System OK";
  if (!$("system-panel").hidden) renderSystem();
}

export function toggleSystem(open = $("system-panel").hidden) {
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
