"""Every built function starts where it will run: its own build.sh, then a fresh interpreter that has nothing but
the bundle and the standard library, real requests on every route (and the scheduled sweep) against the test's
PostgreSQL and moto's S3 server. Nothing comes from the test's virtualenv.

Which packages DigitalOcean's python:3.11 runtime ships is not documented (its Python runtime page lists none;
OpenWhisk's python:3.11 runtime, apache/openwhisk-runtime-python core/python311Action/requirements.txt, lists
requests but not boto3, and DigitalOcean does not promise to follow it), so `RUNTIME_PACKAGES` is empty and every
package a function imports is bundled. The static half follows every import of each function's code (grimp) and
fails when a package it can reach is not bundled; the running half proves the bundle works on its own.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import grimp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from raiox.database import Database
from raiox.review.accounts import add_reviewer
from raiox.services import Services
from raiox.settings import Settings
from raiox.tools.deploy.build import (
    FUNCTION_LIMIT_BYTES,
    RUNTIME_PACKAGES,
    build_do_project,
    run_build_script,
    upload_size,
)
from raiox.tools.deploy.manifest import manifest_functions, read_manifest
from support import REPO, make_xray

FUNCTIONS = {f.name: f for f in manifest_functions(read_manifest())}
# What each function's entry hands the request to (functions/<name>/__main__.py).
ENTRIES = {"webhook": "raiox.sweeper.webhook", "approve": "raiox.review.http", "notify": "raiox.sweeper.notify"}
# Modules no function runs: they load torch or scipy (the identifier is built only where RAIOX_DEVICE runs it:
# embed, the worker, tooling). Their imports are left out of the reachability below.
TORCH_ONLY = ("raiox.adapters.encoder", "raiox.adapters.gpu_decode", "raiox.embed.worker", "raiox.shape.identifier",
              "raiox.shape.canonical", "raiox.shape.descriptor", "raiox.shape.network")
# Packages reachable in code but never imported by a deployed function, and why.
NEVER_BUNDLED = {
    "torch": "embed only", "torchvision": "embed only", "open_clip": "embed only",
    "pgserver": "the embedded database of local runs (raiox.database, DATABASE_URL unset); functions refuse it",
    "flask": "the functions-framework adapter (raiox.web.platforms) for local runs and the embed container",
    "functions_framework": "likewise",
}
# Per function: reachable, but only on a path that function never takes.
_ONLY_INTAKE_DECODES = "only intake examines films (Services.decoders, raiox.adapters.sandbox)"
NOT_IMPORTED_BY = {
    "approve": {"PIL": _ONLY_INTAKE_DECODES, "pydicom": _ONLY_INTAKE_DECODES},
    "notify": {"boto3": "notify builds no object store (no Spaces setting; test_deploy.py checks its code)",
               "botocore": "likewise", "PIL": _ONLY_INTAKE_DECODES, "pydicom": _ONLY_INTAKE_DECODES},
}
SECRETS = {"WEBHOOK_TOKEN": "webhook-token-for-the-runtime-test", "NOTIFY_TOKEN": "notify-token-for-the-runtime-test",
           "REVIEW_TOKEN_SECRET": "review-secret-for-the-runtime-test-0123456789"}


def _pins(function: str) -> set[str]:
    names = set()
    for path in FUNCTIONS[function].requirements:
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                names.add(canonicalize_name(Requirement(line).name))
    return names


def test_every_package_a_function_can_reach_is_bundled() -> None:
    """Follows every import, lazy ones too, from each function's step down (without the torch-only modules): each
    outside package is bundled for that function, or named above with the reason it never loads there."""
    graph = grimp.build_graph("raiox", include_external_packages=True)
    for module in TORCH_ONLY:
        graph.remove_module(module)
    stdlib = set(sys.stdlib_module_names)
    distributions = packages_distributions()
    for function, entry in ENTRIES.items():
        reached = {m for m in graph.find_upstream_modules(entry) if not m.startswith("raiox") and m not in stdlib}
        bundled = _pins(function) | {canonicalize_name(p) for p in RUNTIME_PACKAGES}
        missing = {}
        for module in sorted(reached - set(NEVER_BUNDLED) - set(NOT_IMPORTED_BY.get(function, {}))):
            owners = {canonicalize_name(d) for d in distributions.get(module, [module])}
            if not owners & bundled:
                missing[module] = graph.find_shortest_chain(entry, module)
        assert not missing, f"{function} can import packages its build leaves out: {missing}"
    assert "PIL" in {m for m in graph.find_upstream_modules(ENTRIES["notify"])}  # the chain issue 26 found


def test_the_static_check_would_catch_a_missing_package() -> None:
    assert "pillow" in _pins("notify") and "pillow" not in _pins("approve")


# --- the built bundles, started with nothing else --------------------------------------------------------------

DRIVER = r'''
import json, os, sys
bundle = os.getcwd()
sys.path[:0] = [bundle]  # the launcher runs in the action's folder
f = "virtualenv/bin/activate_this.py"
exec(compile(open(f).read(), f, "exec"), dict(__file__=os.path.abspath(f)))
import importlib.util as u
s = u.spec_from_file_location("main__", "__main__.py"); m = u.module_from_spec(s); s.loader.exec_module(m)
saved, answers = {}, []
for step in json.load(sys.stdin):
    text = json.dumps(step["event"])
    for key, value in saved.items():
        text = text.replace("@" + key + "@", str(value))
    answer = m.main(json.loads(text), None)
    body = answer.get("body")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            body = body[:300]
    for key, field in step.get("save", {}).items():
        saved[key] = body[field]
    answers.append({"status": answer["statusCode"], "body": body})
loaded = sorted({os.path.realpath(mod.__file__) for mod in list(sys.modules.values())
                 if getattr(mod, "__file__", None)})
print(json.dumps({"answers": answers, "loaded": loaded}))
'''


def _web(method: str, path: str = "", *, body: str | bytes = "", headers: dict[str, str] | None = None,
         query: str = "") -> dict[str, Any]:
    encoded = isinstance(body, bytes)
    return {"http": {"method": method, "path": path, "headers": {"x-forwarded-for": "203.0.113.9", **(headers or {})},
                     "body": base64.b64encode(body).decode() if encoded else body, "isBase64Encoded": encoded,
                     "queryString": query}}


def _isolated_env(db_url: str, s3_endpoint: str, bucket: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")}
    return {**keep, "RAIOX_ENV": "prod", "DATABASE_URL": db_url, "DATABASE_POOL_MAX": "2",
            "RAIOX_STORAGE": f"s3://{bucket}", "SPACES_ENDPOINT": s3_endpoint, "SPACES_REGION": "us-east-1",
            "SPACES_KEY": "test-key", "SPACES_SECRET": "test-secret", "RAIOX_LOG_FORMAT": "json", **SECRETS}


def run_isolated(folder: Path, steps: list[dict[str, Any]], env: dict[str, str]) -> dict[str, Any]:
    """The built folder as the runtime starts it: CPython 3.11 with no site-packages (-I -S), the bundle first."""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", DRIVER], cwd=folder, input=json.dumps(steps),
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, (folder.name, done.stderr[-3000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    outside = [p for p in result["loaded"] if not p.startswith((os.path.realpath(folder), stdlib))]
    assert not outside, (folder.name, outside)  # nothing from the test's virtualenv, nothing from anywhere else
    return result


@pytest.fixture(scope="module")
def built_functions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if sys.version_info[:2] != (3, 11) or sys.platform != "linux":
        pytest.skip("the bundles hold CPython 3.11 Linux wheels")
    folders = {folder.name: folder for folder in build_do_project(tmp_path_factory.mktemp("runtime") / "do")}
    for folder in folders.values():
        run_build_script(folder)
    return folders


def test_each_bundle_stays_under_the_limit_with_a_margin(built_functions: dict[str, Path]) -> None:
    for name, folder in built_functions.items():
        assert upload_size(folder) < 0.9 * FUNCTION_LIMIT_BYTES, (name, upload_size(folder))


def test_each_built_function_serves_every_route_on_its_own(built_functions: dict[str, Path], db_url: str,
                                                           s3_endpoint: str, s3_bucket: str) -> None:
    """webhook: health, a direct upload (decoded with the bundled Pillow), the scheduled sweep that stores it in
    object storage; approve: every route of its table, the admin page, a presigned X-ray URL (the bundled boto3);
    notify: health, a delivery call, the scheduled sweep."""
    env = _isolated_env(db_url, s3_endpoint, s3_bucket)
    settings = Settings(database_url=db_url, raiox_storage=f"s3://{s3_bucket}", raiox_env="dev")
    with Database(db_url, max_size=2) as database:
        add_reviewer(Services(settings, db=database), "ana", "a-long-enough-password-1")
    token = f"token={SECRETS['WEBHOOK_TOKEN']}"
    film = make_xray(7)
    boundary = "raiox-runtime-boundary"
    upload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"submission_id\"\r\n\r\nrt-1\r\n"
              f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"film.png\"\r\n"
              f"Content-Type: image/png\r\n\r\n").encode() + film + f"\r\n--{boundary}--\r\n".encode()

    webhook = run_isolated(built_functions["webhook"], [
        {"event": _web("GET", "/health")},
        {"event": _web("GET", "/health", query=f"deep=1&{token}")},
        {"event": _web("POST", body=upload, query=token,
                       headers={"content-type": f"multipart/form-data; boundary={boundary}"}),
         "save": {"case": "case_id"}},
        {"event": {"sweep": True}},
        {"event": _web("POST", body="{}", query="token=wrong", headers={"content-type": "application/json"})},
        # A direct upload over what DigitalOcean delivers (1 MB, base64 inside the event): 413 naming the URL form.
        {"event": _web("POST", body=upload.replace(film, os.urandom(760_000)), query=token,
                       headers={"content-type": f"multipart/form-data; boundary={boundary}"})},
    ], env)["answers"]
    assert [a["status"] for a in webhook] == [200, 200, 202, 200, 401, 413], webhook
    assert "as a URL" in webhook[5]["body"]["error"], webhook[5]
    assert webhook[1]["body"]["database"] == "ok" and webhook[1]["body"]["storage"] == "ok", webhook[1]
    assert webhook[3]["body"]["fetch"]["fetched"] == 1, webhook[3]  # the upload is now an object in S3
    case = webhook[2]["body"]["case_id"]

    bearer = {"authorization": "Bearer @session@", "content-type": "application/json"}
    login = json.dumps({"name": "ana", "password": "a-long-enough-password-1"})
    approve = run_isolated(built_functions["approve"], [
        {"event": _web("GET", "/health")},
        {"event": _web("POST", "/login", body=login, headers={"content-type": "application/json"}),
         "save": {"session": "token"}},
        {"event": _web("GET", "/cases", headers=bearer)},
        {"event": _web("GET", "/catalog", query="q=straumann", headers=bearer)},
        {"event": _web("GET", f"/cases/{case}", headers=bearer)},
        {"event": _web("POST", f"/cases/{case}/decision", headers=bearer,
                       body=json.dumps({"action": "reject", "reason": "not ready yet"}))},
        {"event": _web("POST", f"/cases/{case}/redeliver", headers=bearer, body="{}")},
        {"event": _web("POST", f"/cases/{case}/retry", headers=bearer, body="{}")},
        {"event": _web("GET", "/status", headers=bearer)},
        {"event": _web("GET", "/admin/index.html")},
        {"event": _web("POST", f"/cases/{case}/erase", headers=bearer, body=json.dumps({"confirm": case}))},
        {"event": _web("POST", "/logout", headers=bearer, body="{}")},
        {"event": _web("GET", "/cases", headers=bearer)},
        {"event": _web("GET", "/admin/js/main.js")},
    ], env)["answers"]
    statuses = [a["status"] for a in approve]
    assert statuses[:5] == [200, 200, 200, 200, 200], approve
    detail = approve[4]["body"]
    assert json.dumps(detail).count("X-Amz-Signature") >= 1, detail  # presigned by the bundled boto3
    # A received case cannot be decided, redelivered, retried or erased yet: each route answers its own refusal.
    assert statuses[5:8] == [409, 409, 409] and statuses[10] == 409, approve
    assert "erase it once it is ready" in approve[10]["body"]["error"], approve[10]
    assert [statuses[8], statuses[9], statuses[11], statuses[12]] == [200, 200, 200, 401], approve
    assert approve[9]["body"].startswith("<!doctype html") or "<html" in approve[9]["body"].lower(), approve[9]
    page_entry = (REPO / "admin" / "js" / "main.js").read_text()[:300]  # the driver keeps a body's first 300
    assert statuses[13] == 200 and approve[13]["body"] == page_entry, approve[13]  # a module, from the bundle

    notify = run_isolated(built_functions["notify"], [
        {"event": _web("GET", "/health")},
        {"event": _web("POST", body="{}", headers={"authorization": f"Bearer {SECRETS['NOTIFY_TOKEN']}",
                                                   "content-type": "application/json"})},
        {"event": {"sweep": True}},
        {"event": _web("POST", body="{}", headers={"content-type": "application/json"})},
    ], env)["answers"]
    assert [a["status"] for a in notify] == [200, 200, 200, 401], notify
    assert "notify" in notify[2]["body"] and "embed" in notify[2]["body"], notify[2]


def test_a_package_missing_from_a_bundle_fails_the_start(built_functions: dict[str, Path], tmp_path: Path) -> None:
    """The harness sees what the runtime would: notify without Pillow (main 6218a43's bundle) cannot start."""
    broken = tmp_path / "notify"
    shutil.copytree(built_functions["notify"], broken, symlinks=True)
    site = broken / "virtualenv" / "lib" / "python3.11" / "site-packages"
    shutil.rmtree(site / "PIL")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", DRIVER], cwd=broken, input="[]", capture_output=True,
                          text=True, env={"PATH": os.environ["PATH"], "RAIOX_ENV": "prod"}, timeout=120, check=False)
    assert done.returncode != 0 and "No module named 'PIL'" in done.stderr, done.stderr[-2000:]
