// Calls to the approve API (the folder above this page) and the errors they raise.

import {sentence, showMessage} from "./dom.js";
import {signOut} from "./session.js";
import {state} from "./state.js";

// The approve function serves this page at …/approve/admin/index.html, so its API is the folder above: same
// origin, nothing to configure per deployment.
const API = new URL("..", window.location.href).pathname.replace(/\/+$/, "");

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit"});
  } catch (error) {
    throw new ApiError(0, `Cannot reach the approve API (${API}). Check the connection and try again.`);
  }
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  if (!response.ok) {
    let message = data && data.error ? sentence(data.error) : `The server answered HTTP ${response.status}.`;
    if (response.status >= 500 && response.status !== 503) message = "The server had a problem; it has been logged. Try again.";
    if (response.status === 401 && path !== "/login") {
      signOut(`Your session has ended (${message.replace(/\.$/, "")}). Please sign in again.`);
    }
    throw new ApiError(response.status, message);
  }
  return data;
}

export function failed(error) {
  if (error instanceof ApiError && error.status === 401) return;  // signOut already explained it
  showMessage(error.message || String(error));
}
