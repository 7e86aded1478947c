"""functions-framework entry of the webhook function (local runs, tests and containers)."""

from typing import Any

import functions_framework

from raiox.intake.receive import webhook_handler
from raiox.web import flask_entry


@functions_framework.http
def webhook(request: Any) -> Any:
    return flask_entry(webhook_handler, request)
