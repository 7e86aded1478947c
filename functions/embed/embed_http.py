"""functions-framework entry of the embed function (the GPU container runs this)."""

from typing import Any

import functions_framework

from raiox.sweeper.embed import EMBED
from raiox.web.platforms import flask_entry


@functions_framework.http
def embed(request: Any) -> Any:
    return flask_entry(EMBED, request)
