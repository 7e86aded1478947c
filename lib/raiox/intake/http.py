"""The webhook function's HTTP handler: token, size and shape checks, the body as a `Submission`, the answer."""

from __future__ import annotations

from raiox.adapters.jotform_payload import is_webhook
from raiox.errors import InvalidInput, TooLarge, UnsupportedFormat
from raiox.intake.receive import receive
from raiox.intake.submission import Submission, from_jotform, from_json, from_upload
from raiox.services import Services
from raiox.settings import Settings
from raiox.web.http import HttpRequest, HttpResponse, json_response, require_method, require_secret

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def parse_submission(request: HttpRequest, settings: Settings) -> Submission:
    """Jotform's webhook (multipart or urlencoded), the JSON form, or a direct multipart `file` upload."""
    if request.media_type == "application/json":
        return from_json(request.json_body())
    if request.media_type in _FORM_TYPES:
        fields, files = request.form(max_memory=settings.webhook_max_body_bytes)
        if is_webhook(fields):
            return from_jotform(fields, settings)
        if files.getlist("file"):
            return from_upload(fields, files.getlist("file"), settings)
        raise InvalidInput("the form has neither Jotform's fields (submissionID, rawRequest) nor a `file` upload")
    raise UnsupportedFormat("send multipart/form-data (Jotform or a `file` upload) or application/json")


def handle(request: HttpRequest, services: Services) -> HttpResponse:
    """POST from Jotform (or the JSON / upload senders): 202 new case, 200 duplicate, 4xx refused, 503 retry."""
    settings = services.settings
    require_method(request, "POST")
    require_secret(request.query.get("token"), settings.webhook_token, setting="WEBHOOK_TOKEN",
                   dev=settings.raiox_env == "dev")
    if len(request.body) > settings.webhook_max_body_bytes:
        raise TooLarge(f"the request body is larger than {settings.webhook_max_body_bytes} bytes")
    receipt = receive(parse_submission(request, settings), services)
    if receipt.duplicate:
        return json_response(200, {"case_id": receipt.case_id, "status": receipt.status, "duplicate": True})
    return json_response(202, {"case_id": receipt.case_id, "status": receipt.status, "images": receipt.images,
                               "failed_images": receipt.failed_images, "duplicate": False})
