// Signing in and out, and showing the app once signed in.

import {ApiError, api, failed} from "./api.js";
import {setModal} from "./case.js";
import {$} from "./dom.js";
import {measures} from "./measure.js";
import {loadList, selectTab} from "./queue.js";
import {state} from "./state.js";
import {loadSystem} from "./system.js";
import {filmViewer, refViewer} from "./viewer.js";

export function showLogin(message) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("login-password").value = "";
  (($("login-name").value && $("login-password")) || $("login-name")).focus();
}

export async function signIn(event) {
  event.preventDefault();
  const button = $("login-submit");
  button.disabled = true;
  $("login-error").hidden = true;
  try {
    const answer = await api("POST", "/login", {name: $("login-name").value.trim(), password: $("login-password").value});
    state.token = answer.token;
    state.name = answer.name;
    sessionStorage.setItem("raiox.token", answer.token);
    sessionStorage.setItem("raiox.name", answer.name);
    $("login-password").value = "";
    await showApp();
  } catch (error) {
    $("login-error").textContent = error.message;
    $("login-error").hidden = false;
    $("login-password").select();
  } finally {
    button.disabled = false;
  }
}

// Ends every session of this reviewer on the server (older tokens, copied ones included, stop working), then here.
export async function logOut() {
  let message = null;
  try {
    await api("POST", "/logout");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;  // already signed out, and told why
    message = `Signed out on this device only: ${error.message.replace(/\.$/, "")}. Sessions elsewhere may still be open.`;
  }
  signOut(message);
}

export function signOut(message) {
  state.token = null;
  state.current = null;
  state.system = null;
  state.full = false;
  setModal(false);
  $("system-panel").hidden = true;
  measures.clear();
  filmViewer.show(null, "", "");
  refViewer.show(null, "", "");
  sessionStorage.removeItem("raiox.token");
  sessionStorage.removeItem("raiox.name");
  showLogin(message);
}

export async function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("who-name").textContent = state.name || "";
  selectTab("queue");
  loadSystem().catch(failed);
  await loadList({openFirst: true});
}
