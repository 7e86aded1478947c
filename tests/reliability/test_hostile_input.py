"""Hostile input, table-driven: each kind gets its documented status and a clear error, and changes nothing.

`HOSTILE` below is the one list; the "Hostile input" table in docs/intake.md mirrors it and
`test_docs_document_every_hostile_input` fails when the two disagree. The server is the real one-port
`raiox dev` app in a thread, in production mode (token, form allow-list, sign-in secret), reached over HTTP;
X-ray URLs point at an https server with a certificate for files.jotform.com whose "public" address the
test's network routes to loopback (the `tls_files` fixture of test_intake_fetch).
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom.uid import JPEGLSLossless
from urllib3 import encode_multipart_formdata

import bombs
from fakes import FileServer
from raiox.adapters.fetch import FetchPolicy
from raiox.intake.worker import run_fetch_jobs
from raiox.repository import reviewers as review_sql
from raiox.review import accounts
from raiox.services import Services
from raiox.settings import Settings
from raiox.tools.devserver import start_dev_server
from raiox.tools.local import BASE_PATH, free_port
from raiox.tools.simulator import jotform_fields, multipart
from reliability.support import query
from support import make_dicom, make_xray, submit_case

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hostile-test-webhook-token"
FORM = "251234567890123"
REVIEWER, PASSWORD = "dr.hostile", "a long enough password"
NOTIFY_TOKEN, EMBED_TOKEN = "hostile-test-notify-token", "hostile-test-embed-token"
MAX_BODY = 1_000_000
MAX_FILM = 8 * MAX_BODY  # FETCH_MAX_BYTES: room for the bombs that arrive by URL
DECODE_MEMORY_MB = 128  # RAIOX_DECODE_MEMORY_MB of the server under test
SQL_TEXT = "Robert'); DROP TABLE cases; -- \" \\ %s $1 ; SELECT pg_sleep(10); /*"


@dataclass
class Target:
    """What a row's request needs: where to send it and the state it may refer to."""

    base: str
    files: FileServer
    services: Services
    reviewer_token: str
    received_case: int
    store_root: Path

    def upload_url(self, name: str, host: str = "files.jotform.com") -> str:
        return self.files.url(f"/uploads/{name}", host=host)


Answer = tuple[int, str]


def _answer(response: requests.Response) -> Answer:
    return response.status_code, response.text


def jotform(target: Target, urls: list[str], *, token: str | None = TOKEN, form_id: str = FORM,
            submission_id: str | None = None, **overrides: str) -> Answer:
    fields = jotform_fields(form_id=form_id, submission_id=submission_id or str(time.time_ns()), upload_urls=urls)
    fields.update(overrides)
    body, content_type = multipart(fields)
    params = {"token": token} if token is not None else {}
    return _answer(requests.post(f"{target.base}{BASE_PATH}/webhook", params=params, data=body,
                                 headers={"Content-Type": content_type}, timeout=60))


def raw(target: Target, body: bytes, content_type: str, method: str = "POST") -> Answer:
    return _answer(requests.request(method, f"{target.base}{BASE_PATH}/webhook", params={"token": TOKEN},
                                    data=body, headers={"Content-Type": content_type}, timeout=60))


def json_intake(target: Target, image_url: str) -> Answer:
    return raw(target, json.dumps({"image_url": image_url}).encode(), "application/json")


def upload(target: Target, data: bytes, filename: str = "film.jpg", **fields: str) -> Answer:
    body, content_type = encode_multipart_formdata([("file", (filename, data, "image/jpeg")), *fields.items()])
    return raw(target, body, content_type)


def unnormalised_get(target: Target, path: str) -> Answer:
    """GET with the path sent exactly as written (HTTP clients would resolve the `..` segments first)."""
    host, port = target.base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def decide(target: Target, case_id: int, token: str | None, body: Any = None) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return _answer(requests.post(f"{target.base}{BASE_PATH}/approve/cases/{case_id}/decision",
                                 json=body or {"action": "reject", "reason": "hostile"}, headers=headers, timeout=30))


def reviewer_row(target: Target) -> review_sql.Account:
    with target.services.db.transaction() as conn:
        row = review_sql.reviewer_by_name(conn, REVIEWER)
    assert row is not None
    return row


def forged_token(target: Target) -> str:
    return accounts.issue_token(b"a key the attacker made up", reviewer_row(target), 3600)[0]


def expired_token(target: Target) -> str:
    key = accounts.token_key(target.services.settings)
    return accounts.issue_token(key, reviewer_row(target), 60, now=time.time() - 3600)[0]


# Hostile images ------------------------------------------------------------------------------------


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width × height and carries a few bytes of pixels (a header-size bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def hostile_files() -> dict[str, bytes]:
    jpeg, png, dicom = make_xray(1, fmt="JPEG"), make_xray(2), make_dicom()
    frames = [Image.new("L", (32, 32), shade) for shade in (0, 128, 255)]
    return {
        "text.jpg": b"Dear lab, please find the X-ray attached. Regards",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "bomb.png": _save(Image.new("1", (10_000, 10_000)), "PNG"),  # 100 megapixels in ~15 KB
        "header.png": png_header_only(30_000, 30_000),
        "xxe.svg": (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                    b'<svg xmlns="http://www.w3.org/2000/svg"><text>&xxe;</text></svg>'),
        "animated.gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "pages.tif": _save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "cmyk.jpg": _save(Image.open(io.BytesIO(make_xray(3))).convert("CMYK"), "JPEG"),
        "sixteen.png": make_xray(4, mode="I;16"),
        "a.jpg": jpeg,
        "truncated.dcm": dicom[: len(dicom) - 700],
        "jpegls.dcm": make_dicom(syntax=JPEGLSLossless),
        "frames.dcm": make_dicom(frames=3),
        "film.dcm": make_dicom(np.asarray(Image.open(io.BytesIO(make_xray(5))), dtype=np.uint16) * 16,
                               photometric="MONOCHROME1", PixelSpacing=[0.05, 0.05]),
        # Decompression bombs of each codec (tests/bombs.py): kilobytes that ask for hundreds of megabytes.
        "deflated-bomb.dcm": bombs.deflated_dicom_bomb(512),
        "rle32-bomb.dcm": bombs.rle_dicom_bomb(),
        "rle-segment-bomb.dcm": bombs.rle_segment_bomb(256),
        "rgba16-bomb.png": bombs.png_bomb(),
        "progressive-bomb.jpg": bombs.progressive_jpeg_bomb(),
    }


# Checks of the accepted rows ----------------------------------------------------------------------


def newest_case(target: Target) -> dict[str, Any]:
    return query(target.services.db.url, "SELECT * FROM cases ORDER BY id DESC LIMIT 1")[0]


def newest_images(target: Target) -> list[dict[str, Any]]:
    return query(target.services.db.url, "SELECT status, error, width, height, storage_key FROM case_images "
                                         "WHERE case_id = %s ORDER BY position", newest_case(target)["id"])


def check_stored_literally(target: Target) -> None:
    case = newest_case(target)
    assert case["submitter_name"] == f"{SQL_TEXT} {SQL_TEXT}"
    assert case["submitter_email"] == f"{SQL_TEXT}@example.com"
    assert case["raw_payload"]["rawRequest"]["q6_notes"] == SQL_TEXT
    assert case["raw_payload"]["formTitle"] == SQL_TEXT


def check_filename_is_data(target: Target) -> None:
    assert newest_case(target)["raw_payload"]["filenames"] == ["../../etc/passwd"]


def fetched_and_decoded(target: Target) -> None:
    """The fetch step stores the film, which decodes to what was sent."""
    run_fetch_jobs(target.services)
    [image] = newest_images(target)
    assert image["status"] == "stored" and (image["width"], image["height"]) == (160, 200), image


def fetched_and_failed(reason: str) -> Callable[[Target], None]:
    """The fetch step refuses the film for good, says why on the case, and stores nothing."""
    def check(target: Target) -> None:
        objects = snapshot(target)["objects"]
        run_fetch_jobs(target.services)
        [image] = newest_images(target)
        assert image["status"] == "failed" and reason in image["error"], image
        assert newest_case(target)["status"] == "failed" and reason in newest_case(target)["error"]
        assert snapshot(target)["objects"] == objects

    return check


def fetched_and_retried(reason: str) -> Callable[[Target], None]:
    """Passing trouble: the film stays pending with the reason, and the fetch job will try again."""
    def check(target: Target) -> None:
        run_fetch_jobs(target.services)
        [image] = newest_images(target)
        assert image["status"] == "pending" and reason in image["error"], image
        job = query(target.services.db.url, "SELECT status, attempts FROM jobs WHERE case_id = %s AND kind = 'fetch'",
                    newest_case(target)["id"])[0]
        assert (job["status"], job["attempts"]) == ("pending", 1)

    return check


def worker_killed_on_every_attempt(target: Target) -> None:
    """A film whose fetch kills its worker every time (stood in for by leases that expire with the attempts
    used up): the next run fails the job with the reason, the case needs attention, nothing is stored."""
    objects = snapshot(target)["objects"]
    case_id = newest_case(target)["id"]
    query(target.services.db.url, "UPDATE jobs SET status = 'running', attempts = max_attempts, lease_owner = 'gone', "
                                  "leased_until = now() - interval '1 second' WHERE case_id = %s", case_id)
    assert run_fetch_jobs(target.services).failed == 1
    case = newest_case(target)
    assert case["status"] == "failed" and "its worker stopped" in case["error"], case
    assert snapshot(target)["objects"] == objects


def announced_body_without_the_token(target: Target) -> Answer:
    """POST announcing 20 MB, the token wrong, and only a first piece sent: answered at once, the body unread."""
    host, port = target.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as client:
        client.sendall(f"POST {BASE_PATH}/webhook?token=guess HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       "application/json\r\nContent-Length: 20000000\r\n\r\n{".encode())
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_json(field: str, depth: int = 10_000) -> bytes:
    return ('{"' + field + '": ' + nested(depth) + "}").encode()


def login(target: Target, body: bytes) -> Answer:
    return _answer(requests.post(f"{target.base}{BASE_PATH}/approve/login", data=body,
                                 headers={"Content-Type": "application/json"}, timeout=30))


def approve_get(target: Target, path: str, token: str | None = None, **params: str) -> Answer:
    headers = {"Authorization": f"Bearer {token or target.reviewer_token}"}
    return _answer(requests.get(f"{target.base}{BASE_PATH}/approve{path}", params=params, headers=headers, timeout=30))


def decide_raw(target: Target, body: bytes) -> Answer:
    return _answer(requests.post(f"{target.base}{BASE_PATH}/approve/cases/{target.received_case}/decision",
                                 data=body, headers={"Authorization": f"Bearer {target.reviewer_token}",
                                                     "Content-Type": "application/json"}, timeout=30))


def notify(target: Target, body: bytes) -> Answer:
    return _answer(requests.post(f"{target.base}{BASE_PATH}/notify", data=body, timeout=30, headers={
        "Authorization": f"Bearer {NOTIFY_TOKEN}", "Content-Type": "application/json"}))


def embed(target: Target, body: bytes, token: str | None = EMBED_TOKEN) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return _answer(requests.post(f"{target.base}{BASE_PATH}/embed/match", data=body, headers=headers, timeout=30))


def object_url(target: Target, signature: str) -> Answer:
    key = query(target.services.db.url, "SELECT storage_key FROM case_images WHERE case_id = %s",
                target.received_case)[0]["storage_key"]
    return _answer(requests.get(f"{target.base}/objects/{key}", params={"expires": "9999999999",
                                                                        "signature": signature}, timeout=30))


def jotform_raw_request(target: Target, raw_request: str) -> Answer:
    return jotform(target, [], rawRequest=raw_request)


# The table -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    kind: str  # as in docs/intake.md's table
    status: int
    error: str  # what the answer says (a substring of it)
    send: Callable[[Target], Answer]
    check: Callable[[Target], None] | None = None  # accepted rows: what must have been stored

    @property
    def accepted(self) -> bool:
        return self.status < 300


ACCEPTED = '"duplicate": false'

HOSTILE: list[Hostile] = [
    # The webhook: who may call, and the shape of what they send.
    Hostile("missing webhook token", 401, "missing token", lambda t: jotform(t, [t.upload_url("a.jpg")], token=None)),
    Hostile("wrong webhook token", 401, "wrong token", lambda t: jotform(t, [t.upload_url("a.jpg")], token="guess")),
    Hostile("non-ASCII webhook token", 401, "wrong token",
            lambda t: jotform(t, [t.upload_url("a.jpg")], token="tökén-²")),
    Hostile("wrong token, 20 MB announced (the body is never read)", 401, "wrong token",
            announced_body_without_the_token),
    Hostile("unknown form id", 403, "is not accepted here",
            lambda t: jotform(t, [t.upload_url("a.jpg")], form_id="999999999")),
    Hostile("GET instead of POST", 405, "use POST", lambda t: raw(t, b"", "text/plain", "GET")),
    Hostile("malformed multipart", 400, "the form",
            lambda t: raw(t, b"--nope\r\ngarbage\r\n--", "multipart/form-data; boundary=xyz")),
    Hostile("multipart without a boundary", 400, "the form body is malformed",
            lambda t: raw(t, b"a=1", "multipart/form-data")),
    Hostile("5,000 multipart parts", 400, "more than 64 parts",
            lambda t: raw(t, *encode_multipart_formdata([(f"f{n}", "x") for n in range(5000)]))),
    Hostile("NUL in a form field", 400, "NUL character",
            lambda t: jotform(t, [t.upload_url("a.jpg")], formTitle="X-ray\x00report")),
    Hostile("rawRequest not JSON", 400, "rawRequest is not valid JSON",
            lambda t: jotform_raw_request(t, "{'xrayImage': [")),
    Hostile("rawRequest nested 10,000 deep", 400, "rawRequest is nested deeper",
            lambda t: jotform_raw_request(t, '{"q3_name": ' + nested(10_000) + "}")),
    Hostile("NaN in rawRequest", 400, "rawRequest is not valid JSON",
            lambda t: jotform_raw_request(t, '{"q3_name": NaN}')),
    Hostile("NUL in a rawRequest answer", 400, "NUL character",
            lambda t: jotform_raw_request(t, '{"q6_notes": "a\\u0000b"}')),
    Hostile("lone surrogate in rawRequest", 400, "lone surrogate",
            lambda t: jotform_raw_request(t, '{"q6_notes": "\\ud800"}')),
    Hostile("JSON body not JSON", 400, "not valid JSON", lambda t: raw(t, b"{image_url:", "application/json")),
    Hostile("JSON body nested 10,000 deep", 400, "nested deeper",
            lambda t: raw(t, nested_json("metadata"), "application/json")),
    Hostile("NUL in a JSON field", 400, "NUL character",
            lambda t: raw(t, b'{"image_url": "https://files.jotform.com/uploads/a.jpg", "client_id": "a\\u0000"}',
                          "application/json")),
    Hostile("lone surrogate in a JSON field", 400, "lone surrogate",
            lambda t: raw(t, b'{"image_url": "https://files.jotform.com/uploads/a.jpg", "client_id": "\\udfff"}',
                          "application/json")),
    Hostile("Infinity in a JSON field", 400, "not valid JSON",
            lambda t: raw(t, b'{"image_url": "x", "metadata": {"dose": Infinity}}', "application/json")),
    Hostile("upload metadata nested 10,000 deep", 400, "metadata is nested deeper",
            lambda t: upload(t, make_xray(5), metadata=nested(10_000))),
    Hostile("unknown body type (XML)", 415, "send multipart/form-data",
            lambda t: raw(t, b"<submission/>", "application/xml")),
    Hostile("huge field (body over WEBHOOK_MAX_BODY_BYTES)", 413, "larger than",
            lambda t: jotform(t, [t.upload_url("a.jpg")], pretty="A" * (MAX_BODY + 1))),
    Hostile("more X-rays than WEBHOOK_MAX_IMAGES", 422, "at most 10",
            lambda t: jotform(t, [t.upload_url(f"a.jpg?{n}") for n in range(11)])),
    Hostile("a submission without an X-ray", 422, "no X-ray", lambda t: jotform(t, [])),
    Hostile("SQL metacharacters in the submission id", 400, "submissionID is malformed",
            lambda t: jotform(t, [t.upload_url("a.jpg")], submission_id="1' OR '1'='1")),
    Hostile("path traversal in the submission id", 400, "submission_id is malformed",
            lambda t: upload(t, make_xray(5), submission_id="../../etc/passwd")),
    # Uploaded films: checked at once, before anything is kept.
    Hostile("0-byte file", 415, "the file is empty", lambda t: upload(t, b"")),
    Hostile("text named .jpg", 415, "not a JPEG, PNG, TIFF or DICOM", lambda t: upload(t, t.files.files["text.jpg"])),
    Hostile("truncated JPEG", 422, "cannot decode JPEG", lambda t: upload(t, t.files.files["truncated.jpg"])),
    Hostile("truncated PNG", 422, "cannot decode PNG", lambda t: upload(t, t.files.files["truncated.png"])),
    Hostile("decompression bomb (100 megapixels)", 413, "pixels", lambda t: upload(t, t.files.files["bomb.png"])),
    Hostile("30000×30000 header", 413, "pixels", lambda t: upload(t, t.files.files["header.png"])),
    Hostile("SVG with an external entity", 415, "not a JPEG, PNG, TIFF or DICOM",
            lambda t: upload(t, t.files.files["xxe.svg"])),
    Hostile("animated GIF", 415, "not a JPEG, PNG, TIFF or DICOM", lambda t: upload(t, t.files.files["animated.gif"])),
    Hostile("truncated DICOM", 422, "cannot decode DICOM image",
            lambda t: upload(t, t.files.files["truncated.dcm"])),
    Hostile("JPEG-LS DICOM (no decoder here)", 415, "DICOM compressed as JPEG-LS",
            lambda t: upload(t, t.files.files["jpegls.dcm"])),
    Hostile("multi-frame DICOM", 415, "multi-frame images are not accepted",
            lambda t: upload(t, t.files.files["frames.dcm"])),
    Hostile("multi-page TIFF", 415, "multi-frame images are not accepted",
            lambda t: upload(t, t.files.files["pages.tif"])),
    Hostile("deflated DICOM inflating to 512 MiB", 413, "inflates to more than 144 MiB",
            lambda t: upload(t, t.files.files["deflated-bomb.dcm"])),
    Hostile("16-bit RGBA PNG of 36 megapixels", 413, "137 MiB once decoded, over the decoding limit",
            lambda t: upload(t, t.files.files["rgba16-bomb.png"])),
    Hostile("progressive JPEG declaring 36 megapixels", 413, "343 MiB once decoded, over the decoding limit",
            lambda t: upload(t, t.files.files["progressive-bomb.jpg"])),
    # Film URLs the fetch policy never follows: refused without the network.
    Hostile("URL to 127.0.0.1", 422, "not on the allow-list",
            lambda t: jotform(t, [t.files.url("/uploads/a.jpg", host="127.0.0.1").replace("https", "http")])),
    Hostile("URL to 169.254.169.254", 422, "not on the allow-list",
            lambda t: jotform(t, ["http://169.254.169.254/uploads/latest/meta-data/"])),
    Hostile("URL to [::1]", 422, "not on the allow-list",
            lambda t: jotform(t, [t.files.url("/uploads/a.jpg", "[::1]")])),
    Hostile("file:// URL", 422, "file URLs are not fetched", lambda t: json_intake(t, "file:///etc/passwd")),
    Hostile("gopher:// URL", 422, "gopher URLs are not fetched", lambda t: json_intake(t, "gopher://x/uploads/a")),
    Hostile("URL with credentials", 422, "URLs with credentials",
            lambda t: json_intake(t, "https://user:pw@files.jotform.com/uploads/a.jpg")),
    Hostile("URL to a host not on the allow-list", 422, "not on the allow-list",
            lambda t: json_intake(t, "https://evil.example.com/uploads/a.jpg")),
    Hostile("`..` in a Jotform upload path", 422, "path climbs",
            lambda t: jotform(t, ["https://www.jotform.com/uploads/../API/user"])),
    Hostile("percent-encoded `..` in an upload path", 422, "path climbs",
            lambda t: jotform(t, ["https://www.jotform.com/uploads/%2e%2e/%2e%2e/server-status"])),
    Hostile("URL on a port other than 443", 422, "port 8443 is not fetched from",
            lambda t: json_intake(t, "https://files.jotform.com:8443/uploads/a.jpg")),
    # Film URLs that pass the first look: recorded at once; the fetch step fails them, visibly, with why.
    Hostile("film URL answering 404", 202, ACCEPTED, lambda t: jotform(t, [t.upload_url("gone.jpg")]),
            fetched_and_failed("HTTP 404")),
    Hostile("text named .jpg at a URL", 202, ACCEPTED, lambda t: jotform(t, [t.upload_url("text.jpg")]),
            fetched_and_failed("not a JPEG, PNG, TIFF or DICOM")),
    Hostile("truncated JPEG at a URL", 202, ACCEPTED, lambda t: jotform(t, [t.upload_url("truncated.jpg")]),
            fetched_and_failed("cannot decode JPEG")),
    Hostile("decompression bomb at a URL", 202, ACCEPTED, lambda t: jotform(t, [t.upload_url("bomb.png")]),
            fetched_and_failed("pixels")),
    Hostile("redirect to 127.0.0.1", 202, ACCEPTED,
            lambda t: jotform(t, [t.files.url(f"/redirect?to={t.upload_url('a.jpg', '127.0.0.1')}",
                                              "files.jotform.com")]),
            fetched_and_failed("not on the allow-list")),
    Hostile("redirect to a name that resolves to loopback", 202, ACCEPTED,
            lambda t: jotform(t, [t.files.url(f"/redirect?to={t.upload_url('a.jpg', 'loopback.jotform.com')}",
                                              "files.jotform.com")]),
            fetched_and_failed("private or reserved address")),
    Hostile("a name that resolves to an IPv6 transition address", 202, ACCEPTED,
            lambda t: jotform(t, [t.files.url("/uploads/a.jpg", "nat64.jotform.com")]),
            fetched_and_failed("IPv6 transition address")),
    Hostile("a name that resolves to an IPv4-translated address (::ffff:0:0:0/96)", 202, ACCEPTED,
            lambda t: jotform(t, [t.files.url("/uploads/a.jpg", "translated.jotform.com")]),
            fetched_and_failed("IPv6 transition address")),
    Hostile("RLE DICOM of 6000×6656 at 32 bits at a URL", 202, ACCEPTED,
            lambda t: jotform(t, [t.upload_url("rle32-bomb.dcm")]),
            fetched_and_failed("152 MiB once decoded, over the decoding limit of 128 MiB")),
    Hostile("RLE segment decoding past its small header, at a URL", 202, ACCEPTED,
            lambda t: jotform(t, [t.upload_url("rle-segment-bomb.dcm")]),
            fetched_and_failed(f"needs more than {DECODE_MEMORY_MB} MiB of memory")),
    Hostile("deflated DICOM bomb at a URL", 202, ACCEPTED, lambda t: jotform(t, [t.upload_url("deflated-bomb.dcm")]),
            fetched_and_failed("inflates to more than 144 MiB")),
    Hostile("a film that kills its worker on every attempt", 202, ACCEPTED,
            lambda t: jotform(t, [t.upload_url("a.jpg")]), worker_killed_on_every_attempt),
    Hostile("server that drips bytes past the timeout", 202, ACCEPTED,
            lambda t: jotform(t, [t.files.url("/drip", "files.jotform.com")]),
            fetched_and_retried("longer than 1 s")),
    # Odd but valid.
    Hostile("CMYK JPEG (valid)", 202, ACCEPTED, lambda t: jotform(t, [t.upload_url("cmyk.jpg")]), fetched_and_decoded),
    Hostile("16-bit PNG (valid)", 202, ACCEPTED, lambda t: jotform(t, [t.upload_url("sixteen.png")]),
            fetched_and_decoded),
    Hostile("MONOCHROME1 DICOM with pixel spacing (valid)", 202, ACCEPTED,
            lambda t: jotform(t, [t.upload_url("film.dcm")]), fetched_and_decoded),
    Hostile("SQL metacharacters in every text field", 202, ACCEPTED,
            lambda t: jotform(t, [t.upload_url("a.jpg")], formTitle=SQL_TEXT, username=SQL_TEXT,
                              rawRequest=json.dumps({"q3_name": {"first": SQL_TEXT, "last": SQL_TEXT},
                                                     "q4_email": f"{SQL_TEXT}@example.com", "q6_notes": SQL_TEXT,
                                                     "xrayImage": [t.upload_url("a.jpg")]})),
            check_stored_literally),
    Hostile("path traversal in an upload file name", 202, ACCEPTED,
            lambda t: upload(t, make_xray(6), filename="../../etc/passwd"), check_filename_is_data),
    Hostile("a JSON sender taking a Jotform-like id", 202, ACCEPTED,
            lambda t: raw(t, json.dumps({"image_url": t.upload_url("a.jpg"),
                                         "submission_id": "6999999999999999999"}).encode(), "application/json")),
    # Local-object URLs.
    Hostile("path traversal in an object URL", 403, "invalid object key",
            lambda t: unnormalised_get(t, "/objects/../../signing.key?expires=9999999999&signature=x")),
    Hostile("non-ASCII object-URL signature", 403, "bad signature", lambda t: object_url(t, "sïgnätürë²")),
    Hostile("forged object-URL signature", 403, "bad signature", lambda t: object_url(t, "0" * 64)),
    # The approve API.
    Hostile("path traversal in an approve path", 404, "no such endpoint",
            lambda t: unnormalised_get(t, f"{BASE_PATH}/approve/cases/../../../etc/passwd")),
    Hostile("no reviewer token", 401, "sign in first", lambda t: decide(t, t.received_case, None)),
    Hostile("forged reviewer token", 401, "not valid", lambda t: decide(t, t.received_case, forged_token(t))),
    Hostile("expired reviewer token", 401, "expired", lambda t: decide(t, t.received_case, expired_token(t))),
    Hostile("non-ASCII reviewer token", 401, "not valid", lambda t: decide(t, t.received_case, "ä.ö")),
    Hostile("sign-in body nested 10,000 deep", 400, "nested deeper", lambda t: login(t, nested_json("name"))),
    Hostile("NUL in a sign-in name", 400, "NUL character",
            lambda t: login(t, b'{"name": "dr.hostile\\u0000", "password": "x"}')),
    Hostile("sign-in body over 64 KiB", 413, "larger than",
            lambda t: login(t, json.dumps({"name": "x", "password": "p" * 70_000}).encode())),
    Hostile("decision on a case that is not ready", 409, "ready",
            lambda t: decide(t, t.received_case, t.reviewer_token)),
    Hostile("decision with a malformed body", 422, "action",
            lambda t: decide(t, t.received_case, t.reviewer_token, {"action": "delete"})),
    Hostile("decision for image 10^30", 422, "image_id",
            lambda t: decide(t, t.received_case, t.reviewer_token, {"action": "approve", "rank": 1,
                                                                    "image_id": 10**30})),
    Hostile("NUL in a reject reason", 400, "NUL character",
            lambda t: decide_raw(t, b'{"action": "reject", "reason": "bad\\u0000film"}')),
    Hostile("decision body nested 10,000 deep", 400, "nested deeper", lambda t: decide_raw(t, nested_json("note"))),
    Hostile("page=² in a case list", 400, "whole number", lambda t: approve_get(t, "/cases", page="²")),
    Hostile("NUL in a catalog search", 400, "NUL character", lambda t: approve_get(t, "/catalog", q="a\x00b")),
    Hostile("retry of a case that did not fail", 409, "only a failed case",
            lambda t: _answer(requests.post(f"{t.base}{BASE_PATH}/approve/cases/{t.received_case}/retry",
                                            headers={"Authorization": f"Bearer {t.reviewer_token}"}, timeout=30))),
    # The notify and embed functions.
    Hostile("notify body nested 10,000 deep", 400, "nested deeper", lambda t: notify(t, nested_json("sweep"))),
    Hostile("NaN in a notify body", 400, "not valid JSON", lambda t: notify(t, b'{"sweep": NaN}')),
    Hostile("embed call without a token", 401, "missing token", lambda t: embed(t, make_xray(1), token=None)),
    Hostile("embed body over its cap", 413, "larger than", lambda t: embed(t, b"\0" * (MAX_FILM + 128 * 1024))),
]


# The server --------------------------------------------------------------------------------------------


@pytest.fixture
def target(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           tls_files: tuple[FileServer, FetchPolicy]) -> Iterator[Target]:
    files, tls_policy = tls_files
    files.files.update(hostile_files())

    def resolve(host: str, port: int) -> list[str]:
        if host == "nat64.jotform.com":
            return ["64:ff9b::7f00:1"]
        if host == "translated.jotform.com":
            return ["::ffff:0:7f00:1"]
        if host in ("localhost", "loopback.jotform.com") or re.fullmatch(r"[\d.]+|[0-9a-f:]+", host):
            return ["127.0.0.1" if not re.fullmatch(r"[\d.]+|[0-9a-f:]+", host) else host]
        return tls_policy.resolve(host, port)

    real_from_settings = FetchPolicy.from_settings

    def routed(cls: type[FetchPolicy], settings: Any) -> FetchPolicy:
        return dataclasses.replace(real_from_settings(settings), resolve=resolve, ca_bundle=tls_policy.ca_bundle,
                                   allowed_ports=tls_policy.allowed_ports)

    monkeypatch.setattr(FetchPolicy, "from_settings", classmethod(routed))
    port = free_port()
    store_root = tmp_path / "objects"
    services = Services(Settings.given(
        database_url=db_url, raiox_home=tmp_path / "home", raiox_env="prod", raiox_storage=store_root.as_uri(),
        raiox_public_url=f"http://127.0.0.1:{port}", webhook_token=TOKEN, jotform_form_ids=FORM,
        review_token_secret="hostile-review-secret", fetch_allowed_hosts="images.example.org",
        fetch_timeout_seconds=1, webhook_max_body_bytes=MAX_BODY, raiox_signing_key="hostile-signing-key",
        notify_token=NOTIFY_TOKEN, embed_token=EMBED_TOKEN, fetch_max_bytes=MAX_FILM, jotform_xray_field="xrayImage",
        raiox_decode_memory_mb=DECODE_MEMORY_MB))
    server = start_dev_server(services, "127.0.0.1", port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert accounts.add_reviewer(services, REVIEWER, PASSWORD)
        login = requests.post(f"{base}{BASE_PATH}/approve/login", json={"name": REVIEWER, "password": PASSWORD},
                              timeout=30)
        assert login.status_code == 200, login.text
        received = submit_case(services, "hostile-received-1", [make_xray(7)])
        yield Target(base, files, services, login.json()["token"], received, store_root)
    finally:
        server.shutdown()
        server.server_close()
        services.close()


TABLES = ("cases", "case_images", "jobs", "audit_log", "match_results", "review_decisions", "reference_images",
          "implants", "reviewers")


def snapshot(target: Target) -> dict[str, Any]:
    """Every row of every table that a request could change, and every object in the store."""
    state: dict[str, Any] = {
        table: query(target.services.db.url, f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' "
                                             f"ORDER BY t.id), '')) AS digest FROM {table} t")[0]
        for table in TABLES}
    state["objects"] = sorted(str(p.relative_to(target.store_root)) for p in target.store_root.rglob("*"))
    return state


def test_every_hostile_input_gets_its_documented_answer_and_changes_nothing(target: Target) -> None:
    assert len({row.kind for row in HOSTILE}) == len(HOSTILE) >= 60
    problems: list[str] = []
    before = snapshot(target)
    for row in HOSTILE:
        status, text = row.send(target)
        if status != row.status or row.error not in text:
            problems.append(f"{row.kind}: expected {row.status} saying {row.error!r}, got {status}: {text[:300]}")
        if re.search(r"object at 0x|Traceback|<_io\.", text):
            problems.append(f"{row.kind}: the answer shows Python internals: {text[:300]}")
        after = snapshot(target)
        if row.accepted:
            added = {table: after[table]["n"] - before[table]["n"] for table in ("cases", "case_images", "jobs")}
            if added != {"cases": 1, "case_images": 1, "jobs": 1}:
                problems.append(f"{row.kind}: accepted, but added {added}")
            elif row.check is not None:
                try:
                    row.check(target)
                except AssertionError as exc:
                    problems.append(f"{row.kind}: stored wrongly: {exc}")
            if any(after[t] != before[t] for t in ("implants", "reference_images", "reviewers", "review_decisions")):
                problems.append(f"{row.kind}: accepted, and changed more than its case")
        elif after != before:
            changed = [key for key in after if after[key] != before[key]]
            problems.append(f"{row.kind}: refused with {status}, but changed {changed}")
        before = snapshot(target)  # what an accepted row's check (the fetch step) changed is not the next row's
    assert not problems, "\n".join(problems)
    assert [p.name for p in target.store_root.rglob("passwd")] == []


def documented_table() -> list[tuple[str, int, str]]:
    """The rows of docs/intake.md's "Hostile input" table: (input, status, what the answer says)."""
    text = (REPO / "docs" / "intake.md").read_text()
    section = text.split("## Hostile input", 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].isdigit():
            rows.append((cells[0], int(cells[1]), cells[2].strip("`").replace("\\|", "|")))
    return rows


def test_docs_document_every_hostile_input() -> None:
    assert documented_table() == [(row.kind, row.status, row.error) for row in HOSTILE]
