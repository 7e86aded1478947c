"""The deployment manifest against the tree: entry files, built folders that import and answer, documented
variables, secrets only in `environment`, explicit limits, and the 48 MB size limit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raiox.tools.deploy import (
    FUNCTION_LIMIT_BYTES,
    REPO,
    build_do_project,
    install_requirements,
    manifest_functions,
    placeholders,
    read_manifest,
    upload_size,
)

FUNCTIONS = manifest_functions(read_manifest())


def test_manifest_lists_the_functions_with_explicit_limits() -> None:
    assert {f.name for f in FUNCTIONS} >= {"webhook"}
    for function in FUNCTIONS:
        assert (function.source / "__main__.py").is_file(), function.name
        assert function.spec["runtime"].startswith("python:3.1")
        assert function.spec["web"] == "raw"  # the adapter parses bodies itself (multipart, base64)
        limits = function.spec["limits"]
        assert 1000 <= limits["timeout"] <= 15 * 60 * 1000 and 128 <= limits["memory"] <= 1024


def test_secrets_only_in_environment_and_every_variable_documented() -> None:
    manifest = read_manifest()
    scopes = [manifest, *manifest["packages"], *(f.spec for f in FUNCTIONS)]
    assert not any("${" in json.dumps(scope.get("parameters", {})) for scope in scopes)
    env_example = (REPO / ".env.example").read_text()
    reference = (REPO / "docs" / "settings.md").read_text()
    names = placeholders(manifest)
    assert {"DATABASE_URL", "WEBHOOK_TOKEN", "SPACES_SECRET"} <= names
    for name in names:
        assert re.search(rf"^{name}=", env_example, re.M), f"{name} missing from .env.example"
        assert f"`{name}`" in reference, f"{name} missing from docs/settings.md"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return build_do_project(tmp_path_factory.mktemp("do"))


def test_built_functions_import_and_answer_a_digitalocean_event(built: list[Path]) -> None:
    """Each built folder on its own (its copy of raiox first on sys.path) answers a web: raw GET."""
    event = {"http": {"method": "GET", "path": "/health", "headers": {}, "body": "", "queryString": ""}}
    probe = (
        "import json, runpy, sys; sys.path.insert(0, sys.argv[1]);"
        "main = runpy.run_path(sys.argv[1] + '/__main__.py', run_name='action')['main'];"
        "import raiox; assert raiox.__file__.startswith(sys.argv[1]), raiox.__file__;"
        "answer = main(json.loads(sys.argv[2]), None);"
        "assert 'torch' not in sys.modules;"
        "print(json.dumps(answer))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAIOX_", "DATABASE_", "WEBHOOK_"))}
    for folder in built:
        assert (folder / "raiox" / "sql" / "0001_initial.sql").is_file()  # the link became real files
        run = subprocess.run([sys.executable, "-c", probe, str(folder), json.dumps(event)], env={**env,
                             "RAIOX_ENV": "prod"}, cwd=folder, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        answer = json.loads(run.stdout.strip().splitlines()[-1])
        assert isinstance(answer["statusCode"], int) and answer["statusCode"] < 500, (folder.name, answer)


def test_built_functions_hold_runtime_code_only(built: list[Path]) -> None:
    """The tooling package is left out as a whole (and the encoder's weights: torch runs only in embed)."""
    runtime = {path.relative_to(REPO / "lib") for path in (REPO / "lib" / "raiox").rglob("*.py")
               if "tools" not in path.relative_to(REPO / "lib" / "raiox").parts}
    for folder in built:
        shipped = {path.relative_to(folder) for path in (folder / "raiox").rglob("*.py")}
        assert shipped == runtime, folder.name
        assert not list((folder / "raiox").rglob("*.pt")), folder.name


def test_built_function_stays_under_the_size_limit(built: list[Path]) -> None:
    """Installs the Linux wheels DigitalOcean's build would (from the package index, or pip's cache)."""
    folder = built[0]
    install_requirements(folder)
    assert upload_size(folder) < FUNCTION_LIMIT_BYTES


def test_embed_container_files_match_the_tree() -> None:
    dockerfile = (REPO / "infra" / "embed" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert (REPO / source).exists(), source
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    command = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    target, source = command[command.index("--target") + 1], command[command.index("--source") + 1]
    assert re.search(rf"^def {target}\(", (REPO / source).read_text(), re.M)
    assert "HF_HUB_OFFLINE=1" in dockerfile  # cold starts never reach for the hub
    service = yaml.safe_load((REPO / "infra" / "embed" / "knative-service.yaml").read_text())
    container = service["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    embed_env = (REPO / "infra" / "embed" / "embed.env.example").read_text().splitlines()
    env_keys = {line.split("=", 1)[0] for line in embed_env if line and not line.startswith("#")}
    assert {"DATABASE_URL", "EMBED_TOKEN", "RAIOX_STORAGE"} <= env_keys
