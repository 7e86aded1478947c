"""The webhook records first: real multipart bodies, a real database and object store; nothing is downloaded in
the request (tests/intake/test_fetch_jobs.py fetches). Most tests call the route table (`raiox.intake.http.ROUTES`)
directly; the last ones drive it through the DigitalOcean entry (web: raw, base64 and plain, and the scheduled
trigger) and through functions-framework over real HTTP.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom.uid import JPEGLSLossless
from urllib3 import encode_multipart_formdata

from fakes import FileServer
from raiox.intake.http import ROUTES
from raiox.services import Services
from raiox.tools.simulator import jotform_fields, multipart
from raiox.web.errors import run_handler
from raiox.web.http import HttpRequest, HttpResponse
from support import dicom_pixels, load_function_main, make_dicom

TOKEN = "tok-3f9a-webhook-secret"
FORM = "251234567890123"
REPO = Path(__file__).resolve().parents[1]
_ids = itertools.count(6_000_000_000_000_000_001)


def image(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0]), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format=fmt)
    return out.getvalue()


def new_id() -> str:
    return str(next(_ids))


@pytest.fixture(autouse=True)
def clean_env(raiox_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No intake setting leaks in from the machine running the tests."""
    import os

    for name in list(os.environ):
        if name.startswith(("WEBHOOK_", "JOTFORM_", "FETCH_", "EMBED_", "SPACES_")):
            monkeypatch.delenv(name)


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    server.files.update({"a.jpg": image(seed=1), "b.png": image("PNG", seed=2), "c.jpg": image(seed=3)})
    yield server
    server.close()


@pytest.fixture
def service_defaults() -> dict[str, Any]:
    return {"webhook_token": TOKEN, "fetch_timeout_seconds": 3}


def jotform_request(urls: list[str], *, submission_id: str | None = None, form_id: str = FORM,
                    token: str | None = TOKEN, raw_request: str | None = None) -> HttpRequest:
    fields = jotform_fields(form_id=form_id, submission_id=submission_id or new_id(), upload_urls=urls)
    if raw_request is not None:
        fields["rawRequest"] = raw_request
    body, content_type = multipart(fields)
    return HttpRequest(method="POST", path="/", headers={"content-type": content_type},
                       query={"token": token} if token is not None else {}, body=body)


def call(services: Services, request: HttpRequest) -> HttpResponse:
    return run_handler(ROUTES, request, services)


def rows(services: Services, sql: str) -> list[dict[str, Any]]:
    with services.db.transaction() as conn:
        return conn.execute(sql).fetchall()


def stored_files(services: Services) -> list[Path]:
    root = services.settings.raiox_home.parent / "objects"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_nothing_kept(services: Services) -> None:
    for table in ("cases", "case_images", "jobs", "audit_log"):
        assert rows(services, f"SELECT count(*) AS n FROM {table}")[0]["n"] == 0, table
    assert stored_files(services) == []


def upload_request(*parts: tuple[str, Any], token: str | None = TOKEN) -> HttpRequest:
    body, content_type = encode_multipart_formdata(list(parts))
    return HttpRequest(method="POST", headers={"content-type": content_type},
                       query={"token": token} if token is not None else {}, body=body)


# Accepting: recorded at once, fetched later ------------------------------------------------------------


def test_a_jotform_submission_is_recorded_at_once_with_its_fetch_job(services: Services, files: FileServer) -> None:
    urls = [files.url("/uploads/a.jpg"), files.url("/uploads/b.png")]
    response = call(services, jotform_request(urls, submission_id="6011111111111111111"))
    assert response.status == 202, response.body
    assert response.body == {"case_id": response.body["case_id"], "status": "received", "queued": False,
                             "images": 2, "refused_images": 0, "duplicate": False}
    assert files.requests == []  # nothing downloaded inside the request
    [case] = rows(services, "SELECT * FROM cases")
    assert (case["id"], case["submission_id"], case["form_id"], case["source"], case["status"]) == (
        response.body["case_id"], "6011111111111111111", FORM, "jotform", "received")
    assert case["submitter_name"] == "Ana Souza" and case["submitter_email"] == "clinic@example.com"
    assert "pretty" not in case["raw_payload"] and "webhookURL" not in case["raw_payload"]
    images = rows(services, "SELECT * FROM case_images ORDER BY position")
    assert [(i["position"], i["status"], i["source_url"], i["storage_key"]) for i in images] == [
        (0, "pending", urls[0], None), (1, "pending", urls[1], None)]
    [job] = rows(services, "SELECT * FROM jobs")
    assert (job["kind"], job["case_id"], job["status"]) == ("fetch", case["id"], "pending")
    [audit] = rows(services, "SELECT * FROM audit_log")
    assert (audit["action"], audit["case_id"], audit["actor"]) == ("case.received", case["id"], "system:webhook")
    assert stored_files(services) == []


def test_a_repeat_says_duplicate_and_nothing_about_the_case(services: Services, files: FileServer) -> None:
    request = jotform_request([files.url("/uploads/a.jpg")])
    first, again = call(services, request), call(services, request)
    assert first.status == 202 and again.status == 200
    assert again.body == {"duplicate": True}
    assert len(rows(services, "SELECT id FROM cases")) == 1
    assert len(rows(services, "SELECT id FROM case_images")) == 1
    assert len(rows(services, "SELECT id FROM jobs")) == 1


def test_concurrent_duplicates_make_one_case(services: Services, files: FileServer) -> None:
    request = jotform_request([files.url("/uploads/a.jpg"), files.url("/uploads/c.jpg")])
    barrier = threading.Barrier(6)
    responses: list[HttpResponse] = []

    def deliver() -> None:
        barrier.wait()
        responses.append(call(services, request))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status for r in responses) == [200] * 5 + [202]
    assert all(r.body == {"duplicate": True} for r in responses if r.status == 200)
    assert len(rows(services, "SELECT id FROM cases")) == 1
    assert len(rows(services, "SELECT id FROM case_images")) == 2
    assert len(rows(services, "SELECT id FROM jobs")) == 1
    assert len(rows(services, "SELECT id FROM audit_log")) == 1


def test_json_form_and_direct_upload(services: Services, files: FileServer) -> None:
    body = json.dumps({"image_url": files.url("/uploads/a.jpg"), "client_id": 42, "metadata": {"tooth": "36"}})
    request = HttpRequest(method="POST", headers={"content-type": "application/json"}, query={"token": TOKEN},
                          body=body.encode())
    first, again = call(services, request), call(services, request)
    assert first.status == 202 and first.body["images"] == 1
    assert again.status == 200 and again.body == {"duplicate": True}  # same content, same case

    uploaded = call(services, upload_request(("file", ("pano.png", files.files["b.png"], "image/png")),
                                             ("client_id", "c-7"), ("submission_id", "upload-0001")))
    assert uploaded.status == 202, uploaded.body
    cases = rows(services, "SELECT source, client_id, submission_id FROM cases ORDER BY id")
    assert [(c["source"], c["client_id"]) for c in cases] == [("json", "42"), ("upload", "c-7")]
    assert cases[1]["submission_id"] == "upload-0001"
    # The upload's bytes wait with the case, in the database, until the fetch step stores them.
    [pending] = rows(services, "SELECT upload, status FROM case_images WHERE upload IS NOT NULL")
    assert (bytes(pending["upload"]), pending["status"]) == (files.files["b.png"], "pending")
    assert stored_files(services) == []

    bad = call(services, HttpRequest(method="POST", headers={"content-type": "application/json"},
                                     query={"token": TOKEN}, body=b'{"client_id": 1}'))
    assert bad.status == 400 and "image_url" in bad.body["error"]


def test_submission_ids_are_namespaced_by_source(services: Services, files: FileServer) -> None:
    """A JSON sender that takes a future Jotform id first does not make the real submission a duplicate."""
    squatter = json.dumps({"image_url": files.url("/uploads/a.jpg"), "submission_id": "6099999999999999999"})
    taken = call(services, HttpRequest(method="POST", headers={"content-type": "application/json"},
                                       query={"token": TOKEN}, body=squatter.encode()))
    assert taken.status == 202
    real = call(services, jotform_request([files.url("/uploads/a.jpg")], submission_id="6099999999999999999"))
    assert real.status == 202 and real.body["duplicate"] is False
    assert sorted(r["source"] for r in rows(services, "SELECT source FROM cases")) == ["jotform", "json"]


def test_a_partly_unusable_submission_is_recorded_with_the_refused_image(make_services: Callable[..., Services],
                                                                         files: FileServer) -> None:
    services = make_services(jotform_xray_field="xrayImage")
    response = call(services, jotform_request([files.url("/uploads/a.jpg"), "file:///etc/passwd"]))
    assert response.status == 202
    assert (response.body["images"], response.body["refused_images"]) == (1, 1)
    images = rows(services, "SELECT position, status, error FROM case_images ORDER BY position")
    assert [i["status"] for i in images] == ["pending", "failed"]
    assert "file URLs are not fetched" in images[1]["error"]


# Refusing: authentication and shape ---------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
def test_bad_token_is_401_and_nothing_is_kept(services: Services, files: FileServer, token: str | None) -> None:
    response = call(services, jotform_request([files.url("/uploads/a.jpg")], token=token))
    assert response.status == 401
    assert_nothing_kept(services)


def test_unset_token_refuses_everything_in_prod(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(webhook_token=None, raiox_env="prod")
    response = call(services, jotform_request([files.url("/uploads/a.jpg")]))
    assert response.status == 503 and "WEBHOOK_TOKEN" in response.body["error"]
    assert_nothing_kept(services)
    dev = make_services(webhook_token=None)  # dev mode without a token accepts calls (local runs)
    assert call(dev, jotform_request([files.url("/uploads/a.jpg")], token=None)).status == 202


def test_placeholder_secrets_stop_production(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(raiox_env="prod", webhook_token="CHANGE-ME-long-random")
    response = call(services, jotform_request([files.url("/uploads/a.jpg")], token="CHANGE-ME-long-random"))
    assert response.status == 503 and "WEBHOOK_TOKEN" in response.body["error"]
    assert "CHANGE-ME" not in response.body["error"]
    assert_nothing_kept(services)


def test_unknown_form_is_403(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(jotform_form_ids=f"111, {FORM}")
    refused = call(services, jotform_request([files.url("/uploads/a.jpg")], form_id="999"))
    assert refused.status == 403
    assert_nothing_kept(services)
    assert call(services, jotform_request([files.url("/uploads/a.jpg")])).status == 202


def test_method_size_and_content_type(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(webhook_max_body_bytes=4000)
    request = jotform_request([files.url("/uploads/a.jpg")])
    assert len(request.body) < 4000
    get = call(services, request.model_copy(update={"method": "GET"}))
    assert get.status == 405 and get.headers["Allow"] == "POST"
    assert call(services, request.model_copy(update={"body": request.body + b" " * 4000})).status == 413
    xml = request.model_copy(update={"headers": {"content-type": "text/xml"}})
    assert call(services, xml).status == 415
    garbage = request.model_copy(update={"headers": {"content-type": "multipart/form-data"}})
    assert call(services, garbage).status == 400
    assert_nothing_kept(services)


@pytest.mark.parametrize(("raw_request", "status", "reason"), [
    ("{this is not json", 400, "rawRequest is not valid JSON"),
    ("[" * 5000 + "]" * 5000, 400, "nested deeper"),
    ('{"q3_name": NaN}', 400, "rawRequest is not valid JSON"),
    ('{"q3_name": "A\\u0000B"}', 400, "NUL character"),
    (json.dumps({"q3_name": {"first": "A", "last": "B"}, "xrayImage": []}), 422, "no X-ray"),
])
def test_bad_raw_request_and_empty_upload_list(services: Services, raw_request: str, status: int,
                                               reason: str) -> None:
    response = call(services, jotform_request([], raw_request=raw_request))
    assert response.status == status and reason in response.body["error"], response.body
    assert_nothing_kept(services)


# Refusing: what can be refused without the network ------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/files/a.jpg",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::1]:{port}/files/a.jpg",
    "https://evil.example.org/uploads/a.jpg",
    "file:///etc/passwd",
])
def test_urls_the_policy_never_follows_are_refused_in_prod(make_services: Callable[..., Services],
                                                          files: FileServer, url: str) -> None:
    services = make_services(raiox_env="prod", jotform_xray_field="xrayImage")
    response = call(services, jotform_request([url.format(port=files.port)]))
    assert response.status == 422 and "no usable X-ray" in response.body["error"]
    assert files.requests == []
    assert_nothing_kept(services)


def test_upload_problems_are_refused_with_their_reason(make_services: Callable[..., Services],
                                                       files: FileServer) -> None:
    services = make_services(raiox_max_image_pixels=1_000_000, webhook_max_body_bytes=8 * 1024 * 1024)  # a 2.4 MB DICOM
    jpeg, dicom = image(seed=5), make_dicom()
    bomb = io.BytesIO()
    Image.new("1", (4000, 4000)).save(bomb, format="PNG")  # 16 megapixels in a few kilobytes
    cases = {
        "text.jpg": (b"GIF89a? no: just some text pretending to be a JPEG", 415, "not a JPEG, PNG, TIFF or DICOM"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], 422, "cannot decode JPEG"),
        "bomb.png": (bomb.getvalue(), 413, "over the limit of 1000000 pixels"),
        "empty.jpg": (b"", 415, "the file is empty"),
        "compressed.dcm": (make_dicom(syntax=JPEGLSLossless), 415, "DICOM compressed as JPEG-LS"),
        "frames.dcm": (make_dicom(frames=2), 415, "multi-frame images are not accepted"),
        "truncated.dcm": (dicom[: len(dicom) - 700], 422, "cannot decode DICOM image"),
        "huge.dcm": (make_dicom(dicom_pixels(1200, 1000)), 413, "over the limit of 1000000 pixels"),
    }
    for name, (data, status, reason) in cases.items():
        response = call(services, upload_request(("file", (name, data, "image/jpeg"))))
        assert (response.status, name) == (status, name) and reason in response.body["error"], response.body
        assert "BytesIO" not in response.body["error"]
    assert_nothing_kept(services)


def test_too_many_parts_and_nul_characters_are_refused(services: Services) -> None:
    parts = [(f"field{n}", "x") for n in range(200)]
    assert call(services, upload_request(*parts)).status == 400
    nul = upload_request(("file", ("a.png", image("PNG"), "image/png")), ("client_id", "c\x00d"))
    answer = call(services, nul)
    assert answer.status == 400 and "NUL" in answer.body["error"]
    assert_nothing_kept(services)


# Outages: the database down means the inbox; both down means 503 --------------------------------------


def test_database_down_keeps_the_submission_in_the_inbox_and_the_sweep_records_it(
    make_services: Callable[..., Services], files: FileServer, db_url: str,
) -> None:
    down = make_services(database_url="postgresql://raiox@127.0.0.1:1/raiox", database_timeout_seconds=1)
    request = jotform_request([files.url("/uploads/a.jpg")], submission_id="6022222222222222222")
    kept = call(down, request)
    assert kept.status == 202 and kept.body["queued"] is True and kept.body["case_id"] is None
    assert [p.parent.name for p in stored_files(down)] == ["inbox"]
    up = make_services()  # the same object store, the database back
    assert call(up, request).status == 202  # Jotform (or the clinic) retried meanwhile
    swept = call(up, HttpRequest(method="POST", body=b'{"sweep": true}'))  # never mind: web calls need a token
    assert swept.status in (400, 401, 415)
    from raiox.intake.inbox import replay

    assert replay(up).__dict__ == {"recorded": 0, "duplicates": 1, "refused": 0, "errors": []}
    assert stored_files(up) == []
    assert len(rows(up, "SELECT id FROM cases")) == 1
    # A delivery nobody retried is recorded by the replay, exactly once.
    kept_again = call(down, jotform_request([files.url("/uploads/b.png")], submission_id="6033333333333333333"))
    assert kept_again.body["queued"] is True
    assert replay(up).recorded == 1 and replay(up).recorded == 0
    assert sorted(r["submission_id"] for r in rows(up, "SELECT submission_id FROM cases")) == [
        "6022222222222222222", "6033333333333333333"]


def test_database_and_storage_down_is_503(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(database_url="postgresql://raiox@127.0.0.1:1/raiox", database_timeout_seconds=1,
                             raiox_storage="s3://raiox-down", spaces_endpoint="http://127.0.0.1:1",
                             spaces_key="k", spaces_secret="s")
    response = call(services, jotform_request([files.url("/uploads/a.jpg")]))
    assert response.status == 503 and response.headers["Retry-After"]


def test_storage_down_does_not_stop_intake(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(raiox_storage="s3://raiox-down", spaces_endpoint="http://127.0.0.1:1",
                             spaces_key="k", spaces_secret="s")
    response = call(services, jotform_request([files.url("/uploads/a.jpg")]))
    assert response.status == 202
    assert rows(services, "SELECT kind FROM jobs") == [{"kind": "fetch"}]


# After the commit: the embed poke -------------------------------------------------------------------------


class PokeRecorder:
    """A stand-in embed endpoint that records each POST and answers `status`."""

    def __init__(self, status: int) -> None:
        self.calls: list[dict[str, Any]] = []
        self.called = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.calls.append({"authorization": self.headers.get("Authorization"), "body": json.loads(body)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                owner.called.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/embed"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [200, 500])
def test_embed_is_poked_after_commit_and_a_failed_poke_still_answers_202(
    make_services: Callable[..., Services], files: FileServer, status: int,
) -> None:
    embed = PokeRecorder(status)
    try:
        services = make_services(embed_url=embed.url, embed_token="embed-secret")
        response = call(services, jotform_request([files.url("/uploads/a.jpg")]))
        assert response.status == 202
        assert embed.called.wait(10)
    finally:
        embed.close()
    assert embed.calls == [{"authorization": "Bearer embed-secret", "body": {"case_id": response.body["case_id"]}}]
    [job] = rows(services, "SELECT kind, status FROM jobs")
    assert (job["kind"], job["status"]) == ("fetch", "pending")  # the job waits for the sweeper either way


def test_unreachable_embed_still_answers_202(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(embed_url="http://127.0.0.1:1/embed")
    response = call(services, jotform_request([files.url("/uploads/a.jpg")]))
    assert response.status == 202
    assert rows(services, "SELECT status FROM jobs")[0]["status"] == "pending"


def test_secrets_never_reach_logs_or_responses(make_services: Callable[..., Services], files: FileServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    services = make_services(jotform_api_key="jf-api-secret", embed_url="http://127.0.0.1:1/embed",
                             embed_token="embed-secret")
    caplog.set_level(logging.DEBUG)
    bodies = [call(services, jotform_request([files.url("/uploads/a.jpg")], token=t)).body for t in ("bad", TOKEN)]
    bodies.append(call(services, jotform_request(["https://elsewhere.example.org/uploads/x.jpg"])).body)
    text = caplog.text + json.dumps(bodies) + repr(services.settings)
    for secret in (TOKEN, "jf-api-secret", "embed-secret"):
        assert secret not in text


# The two entry points ----------------------------------------------------------------------------------


@pytest.fixture
def env_services(process_services: Any, tmp_path: Path) -> None:
    """The process-wide services (what the entry files use), configured through the environment."""
    process_services({"RAIOX_ENV": "dev", "RAIOX_STORAGE": (tmp_path / "objects").as_uri(), "WEBHOOK_TOKEN": TOKEN})


@pytest.mark.parametrize("base64_body", [True, False])
def test_digitalocean_raw_event(env_services: None, files: FileServer, base64_body: bool) -> None:
    main = load_function_main("webhook")
    request = jotform_request([files.url("/uploads/a.jpg")])
    event = {"http": {
        "method": "POST", "path": "", "headers": {"content-type": request.content_type},
        "queryString": f"token={TOKEN}", "isBase64Encoded": base64_body,
        "body": base64.b64encode(request.body).decode() if base64_body else request.body.decode(),
    }}
    accepted = main(event, None)
    assert accepted["statusCode"] == 202 and accepted["body"]["images"] == 1
    assert main(event)["body"] == {"duplicate": True}
    event["http"]["queryString"] = "token=nope"
    assert main(event)["statusCode"] == 401


def test_the_scheduled_trigger_sweeps_intake(env_services: None, files: FileServer) -> None:
    """A trigger's event is its body alone (no `http`): the platform authenticated it, so no token."""
    main = load_function_main("webhook")
    request = jotform_request([files.url("/uploads/a.jpg")])
    event = {"http": {"method": "POST", "path": "", "headers": {"content-type": request.content_type},
                      "queryString": f"token={TOKEN}", "isBase64Encoded": False, "body": request.body.decode()}}
    assert main(event)["statusCode"] == 202
    swept = main({"sweep": True})
    assert swept["statusCode"] == 200, swept
    assert swept["body"]["fetch"]["fetched"] == 1 and swept["body"]["embed"] == {"due": 1, "poke": "EMBED_URL unset"}
    assert main({"anything": "else"})["statusCode"] == 400


def test_functions_framework_over_http(env_services: None, files: FileServer, serve_function: Any) -> None:
    base = serve_function("webhook") + "/"
    request = jotform_request([files.url("/uploads/a.jpg"), files.url("/uploads/b.png")])
    headers = {"Content-Type": request.content_type}
    accepted = requests.post(base, params={"token": TOKEN}, data=request.body, headers=headers, timeout=30)
    assert accepted.status_code == 202 and accepted.json()["images"] == 2
    again = requests.post(base, params={"token": TOKEN}, data=request.body, headers=headers, timeout=30)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    refused = requests.post(base, params={"token": "nope"}, data=request.body, headers=headers, timeout=30)
    assert refused.status_code == 401 and TOKEN not in refused.text
    assert requests.get(base, params={"token": TOKEN}, timeout=30).status_code == 405


def test_the_token_is_checked_before_the_body_is_read(db_url: str, tmp_path: Path) -> None:
    """A caller without the token who announces 20 MB gets its 401 at once: the body is never read (the old
    order read it first, so this request would have hung until the body came)."""
    import socket
    import threading

    from raiox.services import Services
    from raiox.settings import Settings
    from raiox.tools.devserver import start_dev_server
    from raiox.tools.local import BASE_PATH, free_port

    port = free_port()
    settings = Settings.given(database_url=db_url, raiox_home=tmp_path / "home", raiox_env="prod",
                              webhook_token="the-real-token", raiox_signing_key="signing-key-for-this-test")
    with Services(settings) as services:
        server = start_dev_server(services, "127.0.0.1", port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            for query in ("", "?token=a-guess"):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                    client.sendall(f"POST {BASE_PATH}/webhook{query} HTTP/1.1\r\nHost: x\r\n"
                                   "Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n".encode()
                                   + b"{" * 1000)  # a first piece; the rest never comes
                    answer = b""
                    while chunk := client.recv(4096):  # the server closes once it answered
                        answer += chunk
                    answer = answer.decode()
                assert answer.startswith("HTTP/1.1 401"), answer
                assert ("missing token" if not query else "wrong token") in answer
        finally:
            server.shutdown()
            server.server_close()
