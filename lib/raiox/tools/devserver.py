"""The one-port local server: every function at its DigitalOcean-like path, the admin page, local objects."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, redirect, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from raiox.adapters.storage import LocalFolderStore
from raiox.review.http import APPROVE
from raiox.services import Services
from raiox.sweeper.embed import EMBED
from raiox.sweeper.notify import NOTIFY
from raiox.sweeper.webhook import WEBHOOK
from raiox.tools.local import BASE_PATH
from raiox.tools.object_server import objects_blueprint
from raiox.web.http import Function
from raiox.web.platforms import flask_entry

log = logging.getLogger(__name__)

# The admin page as deployed: served by the approve function, which it derives its API URL from.
ADMIN_PAGE = f"{BASE_PATH}/approve/admin/index.html"

# Function name → what its DigitalOcean and functions-framework entries serve.
FUNCTIONS: dict[str, Function] = {function.name: function for function in (WEBHOOK, EMBED, NOTIFY, APPROVE)}


def create_dev_app(services: Services) -> Flask:
    """A Flask app with each function under BASE_PATH (extra path → the handler's `path`, as on
    DigitalOcean), /admin/ leading to the admin page approve serves, and signed local-object URLs under /objects/."""
    app = Flask("raiox-dev")

    for name, function in FUNCTIONS.items():

        def call(rest: str = "", function: Function = function) -> Any:
            return flask_entry(function, request, services=services, path=f"/{rest}" if rest else "")

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        app.add_url_rule(f"{BASE_PATH}/{name}", f"{name}_root", call, methods=methods)
        app.add_url_rule(f"{BASE_PATH}/{name}/<path:rest>", name, call, methods=methods)

    if isinstance(services.store, LocalFolderStore):
        app.register_blueprint(objects_blueprint(services.store))

    @app.get("/")
    @app.get("/admin")
    @app.get("/admin/")
    def admin() -> Response:
        return redirect(ADMIN_PAGE)  # type: ignore[return-value]

    return app


class QuietRequestHandler(WSGIRequestHandler):
    """Access log with the path only (query strings carry the webhook token and object-URL signatures); the
    functions' own requests are logged by their adapter, with their function and request id."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path.split("?", 1)[0]
        if not path.startswith(BASE_PATH + "/"):
            log.info('"%s %s" %s', self.command, path, code)


def _starting(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "1")])
    return [b"raiox dev is starting\n"]


def start_dev_server(services: Services | None, host: str = "127.0.0.1", port: int = 8080) -> BaseWSGIServer:
    """Bind the dev app (threaded, so a function may call another on the same port); call serve_forever.
    Without `services` the port is taken at once and answers 503 until `attach` gives it the app."""
    app = create_dev_app(services) if services is not None else _starting
    return make_server(host, port, app, threaded=True, request_handler=QuietRequestHandler)


def attach(server: BaseWSGIServer, services: Services) -> None:
    """Serve the dev app of `services` on a server bound without it."""
    server.app = create_dev_app(services)
