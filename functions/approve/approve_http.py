"""functions-framework entry of the approve function (local runs and containers)."""

from typing import Any

import functions_framework

from raiox.review.http import APPROVE
from raiox.web.platforms import flask_entry


@functions_framework.http
def approve(request: Any) -> Any:
    return flask_entry(APPROVE, request)
