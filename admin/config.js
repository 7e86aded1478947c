// Where the approve function answers. The default suits `raiox dev` (same origin); for a deployed page set
// the function's web URL, e.g. "https://faas-fra1-….doserverless.co/api/v1/web/<namespace>/raiox/approve",
// and add this page's origin to the function's ADMIN_ORIGIN.
window.RAIOX_API = "/api/v1/web/raiox/approve";
