"""The webhook end to end: real multipart bodies, real downloads from a local server, real database and store.

Most tests call the handler (`raiox.intake.http.handle`) directly; the last ones drive the same core through the
DigitalOcean entry (web: raw, base64 and plain) and through functions-framework over real HTTP.
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
from urllib3 import encode_multipart_formdata

from fakes import FileServer
from raiox.intake.http import handle
from raiox.services import Services
from raiox.settings import Settings
from raiox.tools.simulator import jotform_fields, multipart
from raiox.web.errors import run_handler
from raiox.web.http import HttpRequest, HttpResponse
from support import load_function_main

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
def make_services(db_url: str, tmp_path: Path) -> Iterator[Callable[..., Services]]:
    built: list[Services] = []

    def make(**overrides: Any) -> Services:
        values: dict[str, Any] = {
            "database_url": db_url, "raiox_home": tmp_path / "home", "raiox_env": "dev",
            "raiox_storage": (tmp_path / "objects").as_uri(), "webhook_token": TOKEN,
            "fetch_timeout_seconds": 3, **overrides,
        }
        services = Services(Settings(_env_file=None, **values))
        built.append(services)
        return services

    yield make
    for services in built:
        services.close()


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    return make_services()


def jotform_request(urls: list[str], *, submission_id: str | None = None, form_id: str = FORM,
                    token: str | None = TOKEN, raw_request: str | None = None) -> HttpRequest:
    fields = jotform_fields(form_id=form_id, submission_id=submission_id or new_id(), upload_urls=urls)
    if raw_request is not None:
        fields["rawRequest"] = raw_request
    body, content_type = multipart(fields)
    return HttpRequest(method="POST", path="/", headers={"content-type": content_type},
                       query={"token": token} if token is not None else {}, body=body)


def call(services: Services, request: HttpRequest) -> HttpResponse:
    return run_handler(handle, request, services)


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


# Accepting ---------------------------------------------------------------------------------------------


def test_jotform_submission_with_several_images_is_one_case_with_its_embed_job(
    services: Services, files: FileServer,
) -> None:
    urls = [files.url("/files/a.jpg"), files.url("/files/b.png")]
    response = call(services, jotform_request(urls, submission_id="6011111111111111111"))
    assert response.status == 202, response.body
    assert response.body == {"case_id": response.body["case_id"], "status": "received", "images": 2,
                             "failed_images": 0, "duplicate": False}
    [case] = rows(services, "SELECT * FROM cases")
    assert (case["id"], case["submission_id"], case["form_id"], case["source"]) == (
        response.body["case_id"], "6011111111111111111", FORM, "jotform")
    assert case["submitter_name"] == "Ana Souza" and case["submitter_email"] == "clinic@example.com"
    assert "pretty" not in case["raw_payload"] and "webhookURL" not in case["raw_payload"]
    images = rows(services, "SELECT * FROM case_images ORDER BY position")
    assert [(i["position"], i["status"], i["content_type"], i["width"], i["height"]) for i in images] == [
        (0, "stored", "image/jpeg", 64, 48), (1, "stored", "image/png", 64, 48)]
    assert [services.store.get(i["storage_key"]) for i in images] == [files.files["a.jpg"], files.files["b.png"]]
    assert [i["source_url"] for i in images] == urls
    [job] = rows(services, "SELECT * FROM jobs")
    assert (job["kind"], job["case_id"], job["status"]) == ("embed", case["id"], "pending")
    [audit] = rows(services, "SELECT * FROM audit_log")
    assert (audit["action"], audit["case_id"], audit["actor"]) == ("case.received", case["id"], "system:webhook")


def test_repeat_answers_200_duplicate_without_downloading(services: Services, files: FileServer) -> None:
    request = jotform_request([files.url("/files/a.jpg")])
    first = call(services, request)
    downloads = len(files.requests)
    again = call(services, request)
    assert first.status == 202 and again.status == 200
    assert again.body == {"case_id": first.body["case_id"], "status": "received", "duplicate": True}
    assert len(files.requests) == downloads
    assert len(rows(services, "SELECT id FROM cases")) == 1
    assert len(rows(services, "SELECT id FROM case_images")) == 1
    assert len(rows(services, "SELECT id FROM jobs")) == 1


def test_concurrent_duplicates_make_one_case(services: Services, files: FileServer) -> None:
    request = jotform_request([files.url("/files/a.jpg"), files.url("/files/c.jpg")])
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
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 5 + [202]
    assert len({r.body["case_id"] for r in responses}) == 1
    assert all(r.body["duplicate"] for r in responses if r.status == 200)
    assert len(rows(services, "SELECT id FROM cases")) == 1
    assert len(rows(services, "SELECT id FROM case_images")) == 2
    assert len(rows(services, "SELECT id FROM jobs")) == 1
    assert len(rows(services, "SELECT id FROM audit_log")) == 1


def test_json_form_and_direct_upload(services: Services, files: FileServer) -> None:
    body = json.dumps({"image_url": files.url("/files/a.jpg"), "client_id": 42, "metadata": {"tooth": "36"}})
    request = HttpRequest(method="POST", headers={"content-type": "application/json"}, query={"token": TOKEN},
                          body=body.encode())
    first, again = call(services, request), call(services, request)
    assert first.status == 202 and first.body["images"] == 1
    assert again.status == 200 and again.body["case_id"] == first.body["case_id"]  # same content, same case

    upload, content_type = encode_multipart_formdata(
        [("file", ("pano.png", files.files["b.png"], "image/png")), ("client_id", "c-7"),
         ("submission_id", "upload-0001")])
    uploaded = call(services, HttpRequest(method="POST", headers={"content-type": content_type},
                                          query={"token": TOKEN}, body=upload))
    assert uploaded.status == 202, uploaded.body
    cases = rows(services, "SELECT source, client_id, submission_id FROM cases ORDER BY id")
    assert [(c["source"], c["client_id"]) for c in cases] == [("json", "42"), ("upload", "c-7")]
    assert cases[1]["submission_id"] == "upload-0001"

    bad = call(services, HttpRequest(method="POST", headers={"content-type": "application/json"},
                                     query={"token": TOKEN}, body=b'{"client_id": 1}'))
    assert bad.status == 400 and "image_url" in bad.body["error"]


def test_partial_success_records_the_failed_image(services: Services, files: FileServer) -> None:
    response = call(services, jotform_request([files.url("/files/a.jpg"), files.url("/files/missing.jpg")]))
    assert response.status == 202
    assert (response.body["images"], response.body["failed_images"]) == (1, 1)
    images = rows(services, "SELECT position, status, storage_key, error FROM case_images ORDER BY position")
    assert images[0]["status"] == "stored"
    assert images[1]["status"] == "failed" and images[1]["storage_key"] is None
    assert "HTTP 404" in images[1]["error"]
    assert len(rows(services, "SELECT id FROM jobs")) == 1


def test_s3_store_keeps_the_xray_private(make_services: Callable[..., Services], files: FileServer,
                                        s3_bucket: str, s3_endpoint: str) -> None:
    services = make_services(raiox_storage=f"s3://{s3_bucket}/xr", spaces_endpoint=s3_endpoint,
                             spaces_key="test-key", spaces_secret="test-secret")
    response = call(services, jotform_request([files.url("/files/a.jpg")]))
    assert response.status == 202
    [row] = rows(services, "SELECT storage_key FROM case_images")
    assert services.store.get(row["storage_key"]) == files.files["a.jpg"]
    unsigned = services.store.presigned_url(row["storage_key"], 60).split("?")[0]
    assert requests.get(unsigned, timeout=10).status_code == 403


# Refusing: authentication and shape ---------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
def test_bad_token_is_401_and_nothing_is_fetched_or_stored(services: Services, files: FileServer,
                                                            token: str | None) -> None:
    response = call(services, jotform_request([files.url("/files/a.jpg")], token=token))
    assert response.status == 401
    assert files.requests == []
    assert_nothing_kept(services)


def test_unset_token_refuses_everything_in_prod(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(webhook_token=None, raiox_env="prod")
    response = call(services, jotform_request([files.url("/files/a.jpg")]))
    assert response.status == 503 and "WEBHOOK_TOKEN" in response.body["error"]
    assert_nothing_kept(services)
    dev = make_services(webhook_token=None)  # dev mode without a token accepts calls (local runs)
    assert call(dev, jotform_request([files.url("/files/a.jpg")], token=None)).status == 202


def test_unknown_form_is_403(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(jotform_form_ids=f"111, {FORM}")
    refused = call(services, jotform_request([files.url("/files/a.jpg")], form_id="999"))
    assert refused.status == 403
    assert files.requests == []
    assert_nothing_kept(services)
    assert call(services, jotform_request([files.url("/files/a.jpg")])).status == 202


def test_method_size_and_content_type(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(webhook_max_body_bytes=4000)
    request = jotform_request([files.url("/files/a.jpg")])
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
    (json.dumps({"q3_name": {"first": "A", "last": "B"}, "xrayImage": []}), 422, "no X-ray"),
])
def test_bad_raw_request_and_empty_upload_list(services: Services, raw_request: str, status: int,
                                               reason: str) -> None:
    response = call(services, jotform_request([], raw_request=raw_request))
    assert response.status == status and reason in response.body["error"]
    assert_nothing_kept(services)


# Refusing: the images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/files/a.jpg",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::1]:{port}/files/a.jpg",
    "http://127.0.0.1:{port}/redirect?to=http://127.0.0.1:{port}/files/a.jpg",
    "file:///etc/passwd",
])
def test_ssrf_targets_are_refused_in_prod(make_services: Callable[..., Services], files: FileServer,
                                          url: str) -> None:
    services = make_services(raiox_env="prod", jotform_xray_field="xrayImage")
    response = call(services, jotform_request([url.format(port=files.port)]))
    assert response.status == 422 and "no usable X-ray" in response.body["error"]
    assert files.requests == []
    assert_nothing_kept(services)


def test_redirect_to_metadata_is_refused_in_dev(services: Services, files: FileServer) -> None:
    response = call(services, jotform_request([files.url("/redirect?to=http://169.254.169.254/latest/")]))
    assert response.status == 422 and "link-local or metadata" in response.body["error"]
    assert_nothing_kept(services)


def test_image_problems_are_refused_with_their_reason(make_services: Callable[..., Services],
                                                      files: FileServer) -> None:
    services = make_services(fetch_max_bytes=4000, fetch_timeout_seconds=1, raiox_max_image_pixels=1_000_000)
    jpeg = image(seed=5)
    files.files.update({
        "big.jpg": image(size=(400, 400), seed=6),
        "text.jpg": b"GIF89a? no: just some text pretending to be a JPEG",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
    })
    bomb = io.BytesIO()
    Image.new("1", (4000, 4000)).save(bomb, format="PNG")  # 16 megapixels in a few kilobytes
    files.files["bomb.png"] = bomb.getvalue()
    assert len(files.files["bomb.png"]) < 4000 and len(files.files["big.jpg"]) > 4000
    cases = {
        "big.jpg": (413, "larger than 4000 bytes"),
        "text.jpg": (415, "not a JPEG, PNG or TIFF"),
        "truncated.jpg": (422, "cannot decode JPEG"),
        "bomb.png": (413, "over the limit of 1000000 pixels"),
    }
    for name, (status, reason) in cases.items():
        response = call(services, jotform_request([files.url(f"/files/{name}")]))
        assert (response.status, name) == (status, name) and reason in response.body["error"], response.body
    slow = call(services, jotform_request([files.url("/drip")]))
    assert slow.status == 422 and "longer than 1 s" in slow.body["error"]
    mixed = call(services, jotform_request([files.url("/files/big.jpg"), files.url("/files/text.jpg")]))
    assert mixed.status == 422 and "image 1:" in mixed.body["error"] and "image 2:" in mixed.body["error"]
    assert_nothing_kept(services)


def test_storage_down_is_503_and_no_case(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(raiox_storage="s3://raiox-down", spaces_endpoint="http://127.0.0.1:1",
                             spaces_key="k", spaces_secret="s")
    response = call(services, jotform_request([files.url("/files/a.jpg")]))
    assert response.status == 503 and response.headers["Retry-After"]
    assert rows(services, "SELECT count(*) AS n FROM cases")[0]["n"] == 0


# After the commit: the embed poke -------------------------------------------------------------------------


class PokeRecorder:
    """A stand-in embed endpoint that records each POST and answers `status`."""

    def __init__(self, status: int) -> None:
        self.calls: list[dict[str, Any]] = []
        self.called = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
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
        response = call(services, jotform_request([files.url("/files/a.jpg")]))
        assert response.status == 202
        assert embed.called.wait(10)
    finally:
        embed.close()
    assert embed.calls == [{"authorization": "Bearer embed-secret", "body": {"case_id": response.body["case_id"]}}]
    [job] = rows(services, "SELECT status FROM jobs")
    assert job["status"] == "pending"  # the job waits for the sweeper either way


def test_unreachable_embed_still_answers_202(make_services: Callable[..., Services], files: FileServer) -> None:
    services = make_services(embed_url="http://127.0.0.1:1/embed")
    response = call(services, jotform_request([files.url("/files/a.jpg")]))
    assert response.status == 202
    assert rows(services, "SELECT status FROM jobs")[0]["status"] == "pending"


def test_secrets_never_reach_logs_or_responses(make_services: Callable[..., Services], files: FileServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    services = make_services(jotform_api_key="jf-api-secret", embed_url="http://127.0.0.1:1/embed",
                             embed_token="embed-secret")
    caplog.set_level(logging.DEBUG)
    bodies = [call(services, jotform_request([files.url("/files/a.jpg")], token=t)).body for t in ("bad", TOKEN)]
    bodies.append(call(services, jotform_request([files.url("/files/missing.jpg")])).body)
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
    request = jotform_request([files.url("/files/a.jpg")])
    event = {"http": {
        "method": "POST", "path": "", "headers": {"content-type": request.content_type},
        "queryString": f"token={TOKEN}", "isBase64Encoded": base64_body,
        "body": base64.b64encode(request.body).decode() if base64_body else request.body.decode(),
    }}
    accepted = main(event, None)
    assert accepted["statusCode"] == 202 and accepted["body"]["images"] == 1
    assert main(event)["body"] == {"case_id": accepted["body"]["case_id"], "status": "received", "duplicate": True}
    event["http"]["queryString"] = "token=nope"
    assert main(event)["statusCode"] == 401


def test_functions_framework_over_http(env_services: None, files: FileServer, serve_function: Any) -> None:
    base = serve_function("webhook") + "/"
    request = jotform_request([files.url("/files/a.jpg"), files.url("/files/b.png")])
    headers = {"Content-Type": request.content_type}
    accepted = requests.post(base, params={"token": TOKEN}, data=request.body, headers=headers, timeout=30)
    assert accepted.status_code == 202 and accepted.json()["images"] == 2
    again = requests.post(base, params={"token": TOKEN}, data=request.body, headers=headers, timeout=30)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    refused = requests.post(base, params={"token": "nope"}, data=request.body, headers=headers, timeout=30)
    assert refused.status_code == 401 and TOKEN not in refused.text
    assert requests.get(base, params={"token": TOKEN}, timeout=30).status_code == 405
