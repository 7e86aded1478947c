// The entry: wires the page's fixed controls, refreshes the lists, and starts signed in or at the sign-in form.

import {failed} from "./api.js";
import {$} from "./dom.js";
import {onKey} from "./keys.js";
import {TABS, loadList, selectTab} from "./queue.js";
import {logOut, showApp, showLogin, signIn} from "./session.js";
import {state} from "./state.js";
import {loadSystem, toggleSystem} from "./system.js";
import {createViewers} from "./viewer.js";

// The modules import one another in cycles (a render calls actions that render again). That is safe because none
// calls an import while it loads, except from dom.js and state.js, which import nothing: the page starts here,
// after every module has loaded.

const REFRESH_MS = 30000;

$("login-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => logOut());
for (const tab of Object.keys(TABS)) {
  $(`tab-${tab}`).addEventListener("click", () => { selectTab(tab); loadList().catch(failed); });
}
$("system-open").addEventListener("click", () => toggleSystem());
$("load-more").addEventListener("click", () => loadList({append: true}).catch(failed));
document.addEventListener("keydown", onKey);
setInterval(() => {
  if (state.token && document.visibilityState === "visible" && !state.busy) {
    loadList().catch(failed);
    loadSystem().catch(failed);
  }
}, REFRESH_MS);

createViewers();
if (state.token) showApp().catch(failed);
else showLogin();
