"""The webhook function's web calls: its route table (token, size and shape checks, the body as a `Submission`, the
answer at once: 202). Its scheduled trigger is the sweeper's (`raiox.sweeper.webhook`)."""

from __future__ import annotations

from raiox.adapters.jotform_payload import is_webhook
from raiox.errors import InvalidInput, TooLarge, UnsupportedFormat
from raiox.intake.receive import receive
from raiox.intake.submission import Submission, from_jotform, from_json, from_upload
from raiox.services import Services
from raiox.settings import Settings
from raiox.web.http import HttpRequest, HttpResponse, TokenGuard, json_response
from raiox.web.routing import Route, Router

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


def receive_call(request: HttpRequest, services: Services) -> HttpResponse:
    """POST from Jotform (or the JSON / upload senders): 202 recorded (or kept while the database is down),
    200 duplicate, 4xx refused with the reason, 503 only when neither the database nor object storage answers."""
    settings = services.settings
    if len(request.body) > settings.webhook_max_body_bytes:
        raise TooLarge(f"the request body is larger than {settings.webhook_max_body_bytes} bytes: send a film this "
                       "large as a URL (Jotform's upload, or JSON {\"image_url\": …}), not in the request")
    receipt = receive(parse_submission(request, settings), services)
    if receipt.duplicate:
        return json_response(200, {"duplicate": True})
    return json_response(202, {"case_id": receipt.case_id, "status": receipt.status, "queued": receipt.queued,
                               "images": receipt.images, "refused_images": receipt.refused_images,
                               "duplicate": False})


def body_limit(settings: Settings) -> int:
    return settings.webhook_max_body_bytes


# `?token=WEBHOOK_TOKEN`: Jotform's webhook URL carries it.
ROUTES = Router([Route("POST", "/", receive_call)], guard=TokenGuard("WEBHOOK_TOKEN", in_query=True))
