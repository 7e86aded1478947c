"""The admin page's files, served by the approve function at `…/approve/admin/` under a strict CSP."""

from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from raiox.errors import NotFound
from raiox.services import Services
from raiox.web.http import HttpRequest, HttpResponse
from raiox.web.routing import Route

log = logging.getLogger(__name__)

# Every file the page has, by its path under admin/: nothing else there is served. The script is ES modules
# (index.html loads js/main.js, which imports the rest); a module served with another type would not run.
MODULES = ("api", "case", "compare", "decide", "dom", "implants", "keys", "main", "measure", "queue", "session",
           "state", "system", "viewer")
FILES = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    **{f"js/{module}.js": "text/javascript; charset=utf-8" for module in MODULES},
}
_PACKAGE = Path(__file__).resolve().parents[1]
# Beside the raiox package in a function build (`raiox deploy build` copies admin/ there), or at the root of a
# checkout (lib/raiox → admin/).
FOLDERS = (_PACKAGE.parent / "admin", _PACKAGE.parent.parent / "admin")
_PROBE_KEY = "admin-page/00/" + "0" * 64  # never stored: only its presigned URL's origin is used


@lru_cache(maxsize=len(FILES))
def _read(name: str) -> tuple[str, str]:
    """The file's text and its ETag (files never change while a process lives)."""
    for folder in FOLDERS:
        path = folder / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            return text, '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
    raise NotFound("the admin page is not part of this build")


def object_origins(services: Services) -> list[str]:
    """Where the page's X-ray images come from: the origin of a presigned URL (Spaces' bucket host, or the local
    object server of `raiox dev`), made without any network call."""
    try:
        url = services.store.presigned_url(_PROBE_KEY, 60)
    except Exception as exc:  # noqa: BLE001 - any store failure (none, no credentials): the page works, images won't
        log.warning("admin page: no object-storage origin for img-src (%s)", type(exc).__name__)
        return []
    parts = urlsplit(url)
    return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme in ("http", "https") and parts.netloc else []


def content_security_policy(services: Services) -> str:
    """Scripts, styles and API calls from this origin only; images also from object storage; no frames, no
    <base>, no form posts. admin/ has no inline script, style or event handler, so nothing needs 'unsafe-inline'."""
    images = " ".join(["'self'", *object_origins(services)])
    return (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def _redirect_to_index(request: HttpRequest) -> HttpResponse:
    """`…/admin` and `…/admin/` lead to `…/admin/index.html`, whose relative links then resolve in admin/. On
    DigitalOcean the function's own path is in `__OW_ACTION_NAME` (/namespace/package/function), which makes
    the target absolute whatever the platform does with a trailing slash."""
    action = os.environ.get("__OW_ACTION_NAME", "")
    if action.startswith("/"):
        location = f"/api/v1/web{action}/admin/index.html"
    else:
        location = "index.html" if request.path.endswith("/") else "admin/index.html"
    return HttpResponse(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def serve(request: HttpRequest, services: Services) -> HttpResponse:
    """One file of the admin page, revalidated on every load (ETag) so a deploy is seen at once."""
    name = request.path.strip("/").removeprefix("admin").lstrip("/")  # the route table let only FILES through
    if name not in FILES:
        return _redirect_to_index(request)
    text, etag = _read(name)
    headers = {
        "Content-Type": FILES[name],
        "Cache-Control": "no-cache",
        "ETag": etag,
        "Content-Security-Policy": content_security_policy(services),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if request.headers.get("if-none-match") == etag:
        return HttpResponse(status=304, headers=headers)
    return HttpResponse(status=200, body=text, headers=headers)


ROUTES = [Route("GET", path, serve, public=True) for path in ("/admin", *(f"/admin/{name}" for name in FILES))]
