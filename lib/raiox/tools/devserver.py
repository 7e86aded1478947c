"""The one-port local server: every function at its DigitalOcean-like path, the admin page, local objects."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, redirect, request, send_from_directory
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from raiox.adapters.storage import LocalFolderStore
from raiox.services import Services
from raiox.tools.object_server import objects_blueprint
from raiox.web import Handler, flask_entry

log = logging.getLogger(__name__)

BASE_PATH = "/api/v1/web/raiox"
ADMIN_DIR = Path(__file__).resolve().parents[3] / "admin"

# Function name → "module:handler", the same core its DigitalOcean and functions-framework entries call.
FUNCTIONS: dict[str, str] = {
    "webhook": "raiox.intake.receive:webhook_handler",
    "embed": "raiox.embed.http:handle",
    "notify": "raiox.delivery.http:handle",
    "approve": "raiox.review.http:handle",
}


def _load(target: str) -> Handler:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def create_dev_app(services: Services, *, admin_dir: Path = ADMIN_DIR) -> Flask:
    """A Flask app with each function under BASE_PATH (extra path → the handler's `path`, as on
    DigitalOcean), the static admin page under /admin/, and signed local-object URLs under /objects/."""
    app = Flask("raiox-dev")

    for name, target in FUNCTIONS.items():
        handler = _load(target)

        def call(rest: str = "", handler: Handler = handler) -> Any:
            return flask_entry(handler, request, path=f"/{rest}" if rest else "")

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        app.add_url_rule(f"{BASE_PATH}/{name}", f"{name}_root", call, methods=methods)
        app.add_url_rule(f"{BASE_PATH}/{name}/<path:rest>", name, call, methods=methods)

    if isinstance(services.store, LocalFolderStore):
        app.register_blueprint(objects_blueprint(services.store))

    @app.get("/")
    def root() -> Response:
        return redirect("/admin/")  # type: ignore[return-value]

    @app.get("/admin/")
    @app.get("/admin/<path:name>")
    def admin(name: str = "index.html") -> Response:
        if not admin_dir.is_dir():
            abort(404)
        return send_from_directory(admin_dir, name)

    return app


class QuietRequestHandler(WSGIRequestHandler):
    """Access log with the path only: query strings carry the webhook token and object-URL signatures."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info('"%s %s" %s', self.command, self.path.split("?", 1)[0], code)


def start_dev_server(services: Services, host: str = "127.0.0.1", port: int = 8080) -> BaseWSGIServer:
    """Bind the dev app (threaded, so a function may call another on the same port); call serve_forever."""
    return make_server(host, port, create_dev_app(services), threaded=True, request_handler=QuietRequestHandler)
