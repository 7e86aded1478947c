// Building and finding elements (text only, never HTML), the message bar, and formatting for display.

export const $ = (id) => document.getElementById(id);

// Builds an element; strings become text nodes, so data from submitters is never parsed as HTML.
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replaces a node's children; like h(), it leaves out null, undefined and false.
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(key, String(value));
  }
  node.append(...children);
  return node;
}

let messageTimer = null;

export function showMessage(text, kind = "error") {
  const box = $("message");
  clearTimeout(messageTimer);
  box.replaceChildren(h("span", {}, text), h("button", {class: "link dismiss", type: "button",
    "aria-label": "Dismiss", onclick: hideMessage}, "×"));
  box.className = `message ${kind}`;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  box.hidden = false;
  if (kind !== "error") messageTimer = setTimeout(hideMessage, 6000);
}

export function hideMessage() {
  $("message").hidden = true;
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? `today ${date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"})}`
    : date.toLocaleString([], {day: "numeric", month: "short", hour: "2-digit", minute: "2-digit"});
}

export const sentence = (text) => String(text).charAt(0).toUpperCase() + String(text).slice(1);
export const similarity = (value) => Number(value).toFixed(3);
export const implantName = (item) => `${item.manufacturer} ${item.system}`;
