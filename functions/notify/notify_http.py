"""functions-framework entry of the notify function (local runs and containers)."""

from typing import Any

import functions_framework

from raiox.sweeper.notify import NOTIFY
from raiox.web.platforms import flask_entry


@functions_framework.http
def notify(request: Any) -> Any:
    return flask_entry(NOTIFY, request)
