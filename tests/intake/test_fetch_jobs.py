"""The fetch step: recorded X-rays downloaded from a real local server, checked and stored; passing trouble
retried with backoff, permanent trouble failing the X-ray at once, a case with no usable film failed visibly
and retried from the approve API."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fakes import FileServer
from raiox.intake.http import ROUTES
from raiox.intake.worker import run_fetch_jobs
from raiox.repository import images as image_sql
from raiox.review import accounts, decisions
from raiox.services import Services
from raiox.tools.simulator import jotform_fields, multipart
from raiox.web.errors import run_handler
from raiox.web.http import HttpRequest

FORM = "251234567890123"


def image(fmt: str = "JPEG", seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    server.files.update({"a.jpg": image(seed=1), "b.png": image("PNG", seed=2), "text.jpg": b"not an image at all"})
    yield server
    server.close()


@pytest.fixture
def service_defaults() -> dict[str, Any]:
    return {"jotform_xray_field": "xrayImage", "fetch_timeout_seconds": 2}


def submit(services: Services, urls: list[str], submission_id: str) -> int:
    body, content_type = multipart(jotform_fields(form_id=FORM, submission_id=submission_id, upload_urls=urls))
    answer = run_handler(ROUTES, HttpRequest(method="POST", headers={"content-type": content_type}, body=body),
                         services)
    assert answer.status == 202, answer.body
    return int(answer.body["case_id"])


def state(services: Services, case_id: int) -> dict[str, Any]:
    with services.db.transaction() as conn:
        return {
            "case": conn.execute("SELECT status, error FROM cases WHERE id = %s", (case_id,)).fetchone(),
            "images": conn.execute("SELECT status, error, storage_key, upload IS NOT NULL AS waiting "
                                   "FROM case_images WHERE case_id = %s ORDER BY position", (case_id,)).fetchall(),
            "jobs": conn.execute("SELECT kind, status, attempts, last_error FROM jobs WHERE case_id = %s ORDER BY id",
                                 (case_id,)).fetchall(),
            "audit": [r["action"] for r in conn.execute(
                "SELECT action FROM audit_log WHERE case_id = %s ORDER BY id", (case_id,))],
        }


def make_due(services: Services) -> None:
    with services.db.transaction() as conn:
        conn.execute("UPDATE jobs SET run_after = now() WHERE status = 'pending'")


def test_pending_xrays_are_stored_and_the_case_goes_on_to_embed(services: Services, files: FileServer) -> None:
    case_id = submit(services, [files.url("/uploads/a.jpg"), files.url("/uploads/b.png")], "6100000000000000001")
    report = run_fetch_jobs(services)
    assert (report.claimed, report.fetched, report.images_stored) == (1, 1, 2)
    now = state(services, case_id)
    assert now["case"]["status"] == "received"
    assert [i["status"] for i in now["images"]] == ["stored", "stored"]
    assert [services.store.get(i["storage_key"]) for i in now["images"]] == [files.files["a.jpg"],
                                                                            files.files["b.png"]]
    assert [(j["kind"], j["status"]) for j in now["jobs"]] == [("fetch", "done"), ("embed", "pending")]
    assert now["audit"] == ["case.received", "case.fetched"]
    assert run_fetch_jobs(services).claimed == 0  # done is done


def test_an_upload_leaves_the_database_once_stored(services: Services, files: FileServer) -> None:
    from urllib3 import encode_multipart_formdata

    body, content_type = encode_multipart_formdata([("file", ("a.jpg", files.files["a.jpg"], "image/jpeg"))])
    answer = run_handler(ROUTES, HttpRequest(method="POST", headers={"content-type": content_type}, body=body),
                         services)
    case_id = answer.body["case_id"]
    assert state(services, case_id)["images"][0]["waiting"] is True
    run_fetch_jobs(services)
    [stored] = state(services, case_id)["images"]
    assert (stored["status"], stored["waiting"]) == ("stored", False)
    assert services.store.get(stored["storage_key"]) == files.files["a.jpg"]


def test_a_pixel_spacing_the_decoder_found_is_stored_with_the_xray(services: Services, files: FileServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoders that read a spacing (DICOM's PixelSpacing) put it in ImageInfo; the X-ray row keeps it."""
    from dataclasses import replace

    from raiox.adapters.imaging import DecodeLimits, Examined
    from raiox.adapters.sandbox import DecoderPool

    decode = DecoderPool.examine

    def with_spacing(pool: DecoderPool, data: bytes, limits: DecodeLimits) -> Examined:
        found = decode(pool, data, limits)
        return replace(found, info=replace(found.info, pixel_spacing_mm=(0.1, 0.125)))

    case_id = submit(services, [files.url("/uploads/a.jpg")], "6100000000000000007")
    monkeypatch.setattr(DecoderPool, "examine", with_spacing)
    run_fetch_jobs(services)
    with services.db.transaction() as conn:
        stored = conn.execute("SELECT status, pixel_spacing_row_mm AS row_mm, pixel_spacing_col_mm AS col_mm "
                              "FROM case_images WHERE case_id = %s", (case_id,)).fetchone()
    assert (stored["status"], stored["row_mm"], stored["col_mm"]) == ("stored", 0.1, 0.125)


def test_permanent_trouble_fails_the_xray_at_once(services: Services, files: FileServer) -> None:
    urls = [files.url("/uploads/a.jpg"), files.url("/uploads/missing.jpg"), files.url("/uploads/text.jpg"),
            files.url("/redirect?to=http://169.254.169.254/latest/")]
    case_id = submit(services, urls, "6100000000000000002")
    report = run_fetch_jobs(services)
    assert (report.fetched, report.retried) == (1, 0)
    images = state(services, case_id)["images"]
    assert [i["status"] for i in images] == ["stored", "failed", "failed", "failed"]
    assert "HTTP 404" in images[1]["error"] and "not a JPEG, PNG, TIFF or DICOM" in images[2]["error"]
    assert "link-local or metadata" in images[3]["error"]
    with services.db.transaction() as conn:  # as `raiox bench intake` reads them: by URL, in the order recorded
        outcomes = image_sql.fetch_outcomes(conn)
    assert [(o.source_url, o.status, o.error) for o in outcomes] == [(url, i["status"], i["error"])
                                                                     for url, i in zip(urls, images, strict=True)]


def test_passing_trouble_is_retried_with_backoff_until_it_works(services: Services, files: FileServer) -> None:
    case_id = submit(services, [files.url("/flaky/2/a.jpg"), files.url("/uploads/b.png")], "6100000000000000003")
    first = run_fetch_jobs(services)
    assert (first.retried, first.fetched) == (1, 0)
    now = state(services, case_id)
    assert [i["status"] for i in now["images"]] == ["pending", "stored"]  # what worked is kept
    assert "HTTP 503" in now["images"][0]["error"]
    assert now["jobs"][0]["status"] == "pending" and "HTTP 503" in now["jobs"][0]["last_error"]
    assert run_fetch_jobs(services).claimed == 0  # not due before its backoff
    make_due(services)
    assert run_fetch_jobs(services).retried == 1
    make_due(services)
    assert run_fetch_jobs(services).fetched == 1
    done = state(services, case_id)
    assert [i["status"] for i in done["images"]] == ["stored", "stored"]
    assert [(j["kind"], j["status"], j["attempts"]) for j in done["jobs"]] == [("fetch", "done", 3),
                                                                           ("embed", "pending", 0)]


def test_a_case_with_no_usable_film_fails_visibly_and_can_be_retried(make_services: Callable[..., Services],
                                                                      files: FileServer) -> None:
    services = make_services(fetch_max_attempts=2)
    case_id = submit(services, [files.url("/flaky/9/a.jpg")], "6100000000000000004")
    run_fetch_jobs(services)
    make_due(services)
    assert run_fetch_jobs(services).failed == 1
    failed = state(services, case_id)
    assert failed["case"]["status"] == "failed" and "gave up after 2 attempts" in failed["case"]["error"]
    assert [j["status"] for j in failed["jobs"]] == ["failed"]
    assert failed["audit"] == ["case.received", "fetch_failed"]
    accounts.add_reviewer(services, "brenda", "a-long-password")
    brenda = accounts.Reviewer(id=1, name="brenda")
    files.tries.clear()
    files.files["a.jpg"] = image(seed=7)  # the clinic's host is back
    retried = decisions.retry(services, brenda, case_id)
    assert retried["status"] == "received" and retried["images_reopened"] == 1
    assert run_fetch_jobs(services).claimed == 1  # flaky/9 keeps failing: 9 tries, fewer than 9 done so far
    files.tries["/flaky/9/a.jpg"] = 9
    make_due(services)
    assert run_fetch_jobs(services).fetched == 1
    assert state(services, case_id)["images"][0]["status"] == "stored"


def test_storage_down_is_passing_trouble(make_services: Callable[..., Services], files: FileServer) -> None:
    down = make_services(raiox_storage="s3://raiox-down", spaces_endpoint="http://127.0.0.1:1",
                         spaces_key="k", spaces_secret="s")
    case_id = submit(down, [files.url("/uploads/a.jpg")], "6100000000000000005")
    assert run_fetch_jobs(down).retried == 1
    assert "object storage" in state(down, case_id)["images"][0]["error"]


def test_a_slow_host_is_cut_off_by_the_submission_deadline(make_services: Callable[..., Services],
                                                           files: FileServer) -> None:
    services = make_services(fetch_timeout_seconds=30, fetch_deadline_seconds=1)
    case_id = submit(services, [files.url("/drip"), files.url("/drip")], "6100000000000000006")
    assert run_fetch_jobs(services).retried == 1
    assert all("longer than" in i["error"] or "timed out" in i["error"] or "within" in i["error"]
               for i in state(services, case_id)["images"])


def test_dicom_films_through_upload_json_url_and_jotform_keep_their_pixel_spacing(services: Services,
                                                                                   files: FileServer) -> None:
    """A DICOM film sent each way intake takes films is accepted, stored as the PNG the admin page can show,
    with its pixel spacing on the X-ray row (GET /cases/{id} then gives it to the rulers)."""
    import json

    from urllib3 import encode_multipart_formdata

    from raiox.adapters.imaging import load_radiograph
    from support import make_dicom

    spacings = {"upload.dcm": [0.05, 0.0625], "json.dcm": [0.1, 0.1], "jotform.dcm": [0.02, 0.025]}
    films = {name: make_dicom(PixelSpacing=spacing) for name, spacing in spacings.items()}
    files.files.update(films)
    body, content_type = encode_multipart_formdata([("file", ("upload.dcm", films["upload.dcm"], "application/dicom"))])
    uploaded = run_handler(ROUTES, HttpRequest(method="POST", headers={"content-type": content_type}, body=body),
                           services)
    request = json.dumps({"image_url": files.url("/uploads/json.dcm")}).encode()
    as_json = run_handler(ROUTES, HttpRequest(method="POST", headers={"content-type": "application/json"},
                                              body=request), services)
    assert (uploaded.status, as_json.status) == (202, 202), (uploaded.body, as_json.body)
    case_ids = {"upload.dcm": uploaded.body["case_id"], "json.dcm": as_json.body["case_id"],
                "jotform.dcm": submit(services, [files.url("/uploads/jotform.dcm")], "6100000000000000009")}
    assert run_fetch_jobs(services).images_stored == 3
    with services.db.transaction() as conn:
        for name, case_id in case_ids.items():
            row = conn.execute("SELECT status, storage_key, content_type, width, height, pixel_spacing_row_mm AS r, "
                               "pixel_spacing_col_mm AS c FROM case_images WHERE case_id = %s", (case_id,)).fetchone()
            assert (row["status"], row["content_type"], row["width"], row["height"]) == ("stored", "image/png", 40, 60)
            assert [row["r"], row["c"]] == spacings[name], name
            kept = services.store.get(row["storage_key"])
            assert row["storage_key"].endswith(".png") and kept.startswith(b"\x89PNG")
            assert np.array_equal(np.asarray(load_radiograph(kept)), np.asarray(load_radiograph(films[name])))


def test_hostile_dicom_films_fail_the_xray_with_their_reason(services: Services, files: FileServer) -> None:
    from pydicom.uid import JPEGLSLossless

    from support import make_dicom

    whole = make_dicom()
    files.files.update({"compressed.dcm": make_dicom(syntax=JPEGLSLossless), "frames.dcm": make_dicom(frames=4),
                        "truncated.dcm": whole[: len(whole) - 700], "good.dcm": whole})
    case_id = submit(services, [files.url(f"/uploads/{name}") for name in
                                ("compressed.dcm", "frames.dcm", "truncated.dcm", "good.dcm")], "6100000000000000010")
    run_fetch_jobs(services)
    images = state(services, case_id)["images"]
    assert [i["status"] for i in images] == ["failed", "failed", "failed", "stored"]
    assert "DICOM compressed as JPEG-LS" in images[0]["error"] and "multi-frame" in images[1]["error"]
    assert "cannot decode DICOM image" in images[2]["error"]
