"""A stand-in for Jotform's side of intake: webhook payloads as Jotform sends them, and a local file server
playing its upload host. Used by `raiox simulate-webhook`, the demo, the benchmarks and the tests."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

from urllib3 import encode_multipart_formdata

from raiox.tools.waiting import wait_until


def jotform_fields(
    *,
    form_id: str,
    submission_id: str,
    upload_urls: Sequence[str],
    upload_field: str = "xrayImage",
    name: tuple[str, str] = ("Ana", "Souza"),
    email: str = "clinic@example.com",
    webhook_url: str = "",
) -> dict[str, str]:
    """The text fields Jotform's webhook POSTs (see shared/PLATFORM.md), with `rawRequest` as a JSON string."""
    raw_request = {
        "slug": f"submit/{form_id}",
        "path": f"/submit/{form_id}",
        "submitSource": "form",
        "buildDate": str(int(time.time() * 1000)),
        "uploadServerUrl": "https://upload.jotform.com/upload",
        "q3_name": {"first": name[0], "last": name[1]},
        "q4_email": email,
        "q6_notes": "Implant placed abroad, brand unknown, needs a new abutment",
        upload_field: list(upload_urls),
        "temp_upload": {f"q5_{upload_field}": [url.rsplit("/", 1)[-1] for url in upload_urls]},
        "event_id": f"{int(time.time() * 1000)}_{form_id}_sim",
    }
    return {
        "action": "",
        "webhookURL": webhook_url,
        "username": "simulator",
        "formID": form_id,
        "type": "WEB",
        "customParams": "",
        "product": "false",
        "formTitle": "Implant identification",
        "customTitle": "",
        "submissionID": submission_id,
        "event": "",
        "documentID": "",
        "teamID": "",
        "subject": "",
        "isSilent": "false",
        "customBody": "",
        "rawRequest": json.dumps(raw_request),
        "fromTable": "",
        "appID": "",
        # Lossy on purpose: a comma in a value breaks it, which is why intake never reads it.
        "pretty": f"Name:{name[0]} {name[1]}, E-mail:{email}, X-ray:{', '.join(upload_urls)}",
        "unread": "1",
        "parent": "",
        "ip": "127.0.0.1",
    }


def multipart(fields: Mapping[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body of text fields, as Jotform sends it; returns (body, content type)."""
    return encode_multipart_formdata(dict(fields))


def new_submission_id() -> str:
    """A Jotform-like numeric submission id."""
    return str(secrets.randbelow(9 * 10**18) + 10**18)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's default of 5 drops connections from 16 concurrent clients


class _QuietHandler(BaseHTTPRequestHandler):
    """A stand-in's request handler: answers with `reply`, logs nothing."""

    def reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run `handler` on a free 127.0.0.1 port until the block ends; yields the base URL."""
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class FileHost(str):
    """The base URL of a local file host (use it as a string), which also counts what it has served: intake
    fetches films after it answered, so a sender keeps the host up until they were fetched."""

    served: Counter[str]

    def wait_until_served(self, paths: Iterable[str], timeout: float) -> None:
        wanted = set(paths)
        wait_until(lambda: wanted <= set(self.served), timeout, f"{len(wanted)} film(s) to be fetched",
                   interval=0.05)


@contextmanager
def serve_files(files: Mapping[str, bytes]) -> Iterator[FileHost]:
    """Serve `files` (path → bytes) over HTTP on a free 127.0.0.1 port; yields its base URL as a FileHost."""
    served: Counter[str] = Counter()

    class Handler(_QuietHandler):
        def do_GET(self) -> None:  # http.server's naming
            path = self.path.split("?", 1)[0]
            data = files.get(path)
            if data is None:
                self.send_error(404)
                return
            self.reply(data, "application/octet-stream")
            served[path] += 1

    with _serving(Handler) as url:
        host = FileHost(url)
        host.served = served
        yield host


def with_token(url: str, token: str | None) -> str:
    if not token:
        return url
    return f"{url}{'&' if '?' in url else '?'}token={quote(token, safe='')}"


class JotformApiStandIn:
    """A local HTTP server playing Jotform's REST API: answers `POST /submission/<id>` like Jotform and
    records each request's path, headers and form fields. Use as a context manager; `.url` is the base."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        recorded = self.requests

        class Handler(_QuietHandler):
            def do_POST(self) -> None:  # http.server's naming
                from urllib.parse import parse_qsl

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                recorded.append({"path": self.path, "headers": dict(self.headers.items()),
                                 "fields": dict(parse_qsl(body, keep_blank_values=True))})
                self.reply(json.dumps({"responseCode": 200, "message": "success", "content": {},
                                       "limit-left": 9999}).encode(), "application/json")

        self._serving = _serving(Handler)
        self.url = ""

    def __enter__(self) -> JotformApiStandIn:
        self.url = self._serving.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.__exit__(None, None, None)
