"""HTTP serving of local-folder objects behind their signed, expiring URLs (the local stand-in for Spaces)."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, abort, request

from raiox.adapters.storage import InvalidKey, InvalidSignature, LocalFolderStore, ObjectNotFound, content_type_for

log = logging.getLogger(__name__)


def objects_blueprint(store: LocalFolderStore) -> Blueprint:
    """GET /objects/<key>?expires=…&signature=… answers the object, 403 when unsigned or expired."""
    blueprint = Blueprint("objects", __name__)

    @blueprint.get("/objects/<path:key>")
    def get_object(key: str) -> Response:
        try:
            store.verify(key, request.args.get("expires", ""), request.args.get("signature", ""))
            data = store.get(key)
        except (InvalidSignature, InvalidKey) as exc:
            log.warning("refused object URL: %s", exc)
            abort(403, description=str(exc))
        except ObjectNotFound:
            abort(404)
        return Response(
            data,
            mimetype=content_type_for(key),
            headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
        )

    return blueprint


def create_object_app(store: LocalFolderStore) -> Flask:
    app = Flask(__name__)
    app.register_blueprint(objects_blueprint(store))
    return app
