"""The embed function through both entry points: functions-framework over real HTTP, and the DO `main`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import requests

from support import case_state, load_function_main, make_xray, submit_case

TOKEN = "embed-test-token"


@pytest.fixture
def env_services(process_services, tiny_checkpoint: Path, tiny_encoder):  # type: ignore[no-untyped-def]
    """The process-wide services the entry files use, configured through the environment (prod mode)."""
    services = process_services({"RAIOX_ENV": "prod", "EMBED_TOKEN": TOKEN, "RAIOX_CLIP_MODEL": "raiox-tiny-vit",
                                 "RAIOX_CLIP_PRETRAINED": str(tiny_checkpoint)})
    services._built["encoder"] = tiny_encoder  # loaded once per session; same weights the env names
    return services


def test_over_http(catalogued, env_services, serve_function) -> None:  # type: ignore[no-untyped-def]
    base = serve_function("embed")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
    assert requests.post(base, timeout=10).status_code == 401
    assert requests.post(base, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401

    case_id = submit_case(env_services, "http-1", [make_xray(21)])
    ran = requests.post(base, headers=auth, timeout=60)
    assert ran.status_code == 200
    assert ran.json()["ready"] == 1 and ran.json()["model_id"] == env_services.encoder.model_id
    assert case_state(env_services, case_id)["case"].status == "ready"

    # Direct mode: no case is created; raw body or multipart `file`.
    direct = requests.post(f"{base}/match", headers={**auth, "Content-Type": "image/png"},
                           data=make_xray(12), timeout=60)
    assert direct.status_code == 200
    top = direct.json()["candidates"]
    assert [c["rank"] for c in top] == [1, 2, 3] and top[0]["system"] == "S12"
    assert top[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    multipart = requests.post(f"{base}/match", headers=auth, files={"file": ("x.png", make_xray(13))}, timeout=60)
    assert multipart.status_code == 200 and multipart.json()["candidates"][0]["system"] == "S13"
    bad = requests.post(f"{base}/match", headers=auth, files={"file": ("x.jpg", b"text, not a jpeg")}, timeout=60)
    assert bad.status_code == 415 and "not a JPEG" in bad.json()["error"]
    with env_services.db.transaction() as conn:
        assert conn.execute("SELECT count(*) AS n FROM cases").fetchone()["n"] == 1


def test_digitalocean_entry(catalogued, env_services) -> None:  # type: ignore[no-untyped-def]
    main = load_function_main("embed")
    case_id = submit_case(env_services, "do-1", [make_xray(22)])
    headers = {"authorization": f"Bearer {TOKEN}"}
    refused = main({"http": {"method": "POST", "path": "", "headers": {}, "body": "", "queryString": ""}})
    assert refused["statusCode"] == 401
    ran = main({"http": {"method": "POST", "path": "", "headers": headers, "body": "", "queryString": ""}}, None)
    assert ran["statusCode"] == 200 and ran["body"]["ready"] == 1
    assert case_state(env_services, case_id)["case"].status == "ready"
    image = base64.b64encode(make_xray(14)).decode()
    direct = main({"http": {"method": "POST", "path": "/match", "headers": {**headers, "content-type": "image/png"},
                            "body": image, "isBase64Encoded": True, "queryString": ""}})
    assert direct["statusCode"] == 200 and direct["body"]["candidates"][0]["system"] == "S14"


def test_unconfigured_token_refuses_in_production(env_services) -> None:  # type: ignore[no-untyped-def]
    env_services.settings.embed_token = None
    main = load_function_main("embed")
    answer = main({"http": {"method": "POST", "path": "", "headers": {}, "body": "", "queryString": ""}})
    assert answer["statusCode"] == 503 and "EMBED_TOKEN" in answer["body"]["error"]
