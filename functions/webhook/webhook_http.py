"""functions-framework entry of the webhook function (local runs, tests and containers)."""

from typing import Any

import functions_framework

from raiox.sweeper.webhook import WEBHOOK
from raiox.web.platforms import flask_entry


@functions_framework.http
def webhook(request: Any) -> Any:
    return flask_entry(WEBHOOK, request)
