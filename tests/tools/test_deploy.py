"""The deployment manifest against the tree and the deployer's rules: entry files, built folders that import and
answer, documented variables, each function's own settings, optional lines, the 48 MB limit, and the container
files. The deployer itself reads build/do in test_deployer.py; `raiox deploy check` is in test_deploy_check.py."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raiox.review.admin_page import FILES as ADMIN_FILES
from raiox.tools.cli import main
from raiox.tools.deploy.build import FUNCTION_LIMIT_BYTES, build_do_project, run_build_script, upload_size
from raiox.tools.deploy.envfile import read_env_file
from raiox.tools.deploy.manifest import (
    REPO,
    ManifestError,
    function_settings,
    manifest_functions,
    optional_names,
    placeholders,
    read_manifest,
    scan,
    without_empty_optional,
)

MANIFEST = read_manifest()
FUNCTIONS = manifest_functions(MANIFEST)
TEXT = (REPO / "project.yml").read_text(encoding="utf-8")


def test_manifest_lists_the_functions_with_explicit_limits() -> None:
    assert {f.name for f in FUNCTIONS} == {"webhook", "approve", "notify"}
    for function in FUNCTIONS:
        assert (function.source / "__main__.py").is_file(), function.name
        assert function.spec["runtime"] == "python:3.11"  # build.sh installs CPython 3.11 wheels
        assert function.spec["web"] == "raw"  # the adapter parses bodies itself (multipart, base64)
        limits = function.spec["limits"]
        assert 1000 <= limits["timeout"] <= 15 * 60 * 1000 and 128 <= limits["memory"] <= 1024


def test_secrets_only_in_environment_and_every_variable_documented() -> None:
    scopes = [MANIFEST, *MANIFEST["packages"], *(f.spec for f in FUNCTIONS)]
    assert not any("${" in json.dumps(scope.get("parameters", {})) for scope in scopes)
    env_example = read_env_file(REPO / ".env.example")
    reference = (REPO / "docs" / "settings.md").read_text()
    names = placeholders(MANIFEST)
    assert {"DATABASE_URL", "WEBHOOK_TOKEN", "SPACES_SECRET"} <= names
    assert names == set(env_example), names ^ set(env_example)
    for name in names:
        assert f"`{name}`" in reference, f"{name} missing from docs/settings.md"
    for name in names - optional_names(TEXT):  # a required setting ships with a value deploy check refuses
        assert env_example[name], f"{name} is required but empty in .env.example"


def test_every_substitution_sits_on_a_setting_line_of_its_own_name() -> None:
    """The deployer substitutes `${…}` and `$(…)` in the raw text, comments included (functions-deployer
    src/util.ts, substituteFromEnvAndFiles): anywhere else one is a variable the deploy stops on."""
    assert {p.name for p in scan(TEXT)} == placeholders(MANIFEST)
    for broken in ('  # filled from "${VAR}"\n', "  KEY: value # $(date)\n", '  KEY: "${OTHER}"\n',
                   '  KEY: "prefix-${KEY}"\n'):
        with pytest.raises(ManifestError):
            scan(TEXT + broken)


def test_each_function_gets_only_the_settings_its_code_reads() -> None:
    """Security issue item 6: notify never touches objects, so it holds no Spaces key; one function's own
    secret is in no other function."""
    settings = {f.name: set(function_settings(MANIFEST, f)) for f in FUNCTIONS}
    spaces = {"RAIOX_STORAGE", "SPACES_ENDPOINT", "SPACES_REGION", "SPACES_KEY", "SPACES_SECRET"}
    assert spaces <= settings["webhook"] and spaces <= settings["approve"]
    assert not spaces & settings["notify"]
    owners = {"WEBHOOK_TOKEN": {"webhook"}, "REVIEW_TOKEN_SECRET": {"approve"}, "NOTIFY_WEBHOOK_SECRET": {"notify"},
              "EMBED_TOKEN": {"webhook", "approve", "notify"}, "NOTIFY_TOKEN": {"approve", "notify"},
              "JOTFORM_API_KEY": {"webhook", "notify"}, "DATABASE_URL": {"webhook", "approve", "notify"}}
    for name, functions in owners.items():
        assert {f for f, names in settings.items() if name in names} == functions, name
    # Every raiox module the notify function loads (its step and whatever that imports) leaves objects alone.
    probe = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='action');"
             "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('raiox.') and m.__file__))")
    loaded = subprocess.run([sys.executable, "-c", probe, str(REPO / "functions" / "notify" / "__main__.py")],
                            capture_output=True, text=True, check=True, timeout=60).stdout.split()
    notify_code = {path: Path(path).read_text() for path in loaded
                   if "/adapters/" not in path and not path.endswith("/services.py")}  # where a store is built
    assert any(path.endswith("sweeper/round.py") for path in notify_code)
    assert not [path for path, code in notify_code.items() if re.search(r"\.store\b|presigned_url", code)]


def test_empty_optional_lines_are_left_out_and_required_ones_stay() -> None:
    pruned = without_empty_optional(TEXT, {"JOTFORM_FORM_IDS": "123", "JOTFORM_API_KEY": ""})
    assert 'JOTFORM_FORM_IDS: "${JOTFORM_FORM_IDS}"' in pruned and "JOTFORM_API_KEY:" not in pruned
    assert "ADMIN_ORIGIN:" not in pruned
    assert {p.name for p in scan(pruned)} == (placeholders(MANIFEST) - optional_names(TEXT)) | {"JOTFORM_FORM_IDS"}
    assert yaml.safe_load(pruned)["packages"][0]["functions"][2]["triggers"][0]["type"] == "scheduled"


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


def test_built_functions_hold_runtime_code_and_an_executable_build(built: list[Path]) -> None:
    """The tooling package is left out as a whole (and the encoder's weights: torch runs only in embed); each
    folder has the build.sh the deployer runs, and the requirements its code needs."""
    runtime = {path.relative_to(REPO / "lib") for path in (REPO / "lib" / "raiox").rglob("*.py")
               if "tools" not in path.relative_to(REPO / "lib" / "raiox").parts}
    for folder in built:
        shipped = {path.relative_to(folder) for path in (folder / "raiox").rglob("*.py")}
        assert shipped == runtime, folder.name
        assert not list((folder / "raiox").rglob("*.pt")), folder.name
        assert (folder / "build.sh").stat().st_mode & stat.S_IXUSR
        requirements = (folder / "requirements.txt").read_text()
        assert re.search(r"^numpy==", requirements, re.M) and re.search(r"^psycopg-binary==", requirements, re.M)
        assert bool(re.search(r"^pillow==", requirements, re.M)) == (folder.name != "approve"), folder.name
        assert bool(re.search(r"^boto3==", requirements, re.M)) == (folder.name != "notify"), folder.name
        assert re.search(r"^requests==", requirements, re.M), folder.name  # the runtime promises no package
        admin = {str(path.relative_to(folder / "admin")) for path in (folder / "admin").rglob("*") if path.is_file()}
        assert admin == (set(ADMIN_FILES) if folder.name == "approve" else set()), folder.name  # every module too


def test_every_requirement_is_pinned() -> None:
    for path in (REPO / "infra" / "functions").glob("requirements*.txt"):
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert re.fullmatch(r"[a-z0-9-]+(\[\w+\])?==[\w.]+", line), (path.name, line)


def test_built_function_stays_under_the_size_limit(built: list[Path]) -> None:
    """Runs the webhook's build.sh (the largest: it needs pillow and boto3) as the deployer would, and measures it."""
    folder = next(f for f in built if f.name == "webhook")
    run_build_script(folder)
    assert (folder / "virtualenv" / "bin" / "activate_this.py").is_file()
    assert upload_size(folder) < FUNCTION_LIMIT_BYTES


def test_deploy_build_with_an_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`raiox deploy build --env` leaves empty optional lines out, writes no value, warns when the shell
    overrides the file, and refuses a value that would break the manifest."""
    for name in placeholders(MANIFEST):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    env_file = tmp_path / ".env"
    env_file.write_text((REPO / ".env.example").read_text().replace("WEBHOOK_TOKEN=CHANGE-ME-long-random",
                                                                     "WEBHOOK_TOKEN=s3cret-in-the-file"))
    monkeypatch.setenv("EMBED_TOKEN", "another-one-in-the-shell")
    result = CliRunner().invoke(main, ["deploy", "build", "--env", str(env_file), "--out", "do"])
    assert result.exit_code == 0, result.output
    assert "EMBED_TOKEN is set in your shell" in result.output and "another-one" not in result.output
    deployed = (tmp_path / "do" / "project.yml").read_text()
    assert "ADMIN_ORIGIN:" not in deployed and '"${WEBHOOK_TOKEN}"' in deployed
    assert not any("s3cret-in-the-file" in p.read_text(errors="ignore") for p in (tmp_path / "do").rglob("*")
                   if p.is_file())

    env_file.write_text(env_file.read_text().replace("s3cret-in-the-file", 'with"quote'))
    result = CliRunner().invoke(main, ["deploy", "build", "--env", str(env_file), "--out", "do"])
    assert result.exit_code == 1 and "WEBHOOK_TOKEN: a double quote" in result.output
    assert 'with"quote' not in result.output


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
