"""build/do as the Functions deployer itself reads, builds and would deploy it: offline, no credentials.

Runs infra/deployer-check/read-project.js (Node, @nimbella/nimbella-deployer 4.3.10, the open-source code the
deployer behind `doctl serverless deploy` grew from: the same substitution, YAML reading, validation, build and
zip) on the output of `raiox deploy build --env` with .env.example as a lab owner copies it. Where the two
deployers differ (triggers), the script applies DigitalOcean's rule (functions-deployer src/util.ts
validateTriggers). `npm ci --prefix infra/deployer-check` installs it (`make test` does); without it these tests
skip, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raiox.review.admin_page import FILES as ADMIN_FILES
from raiox.tools.deploy.build import FUNCTION_LIMIT_BYTES, build_do_project, upload_size
from raiox.tools.deploy.envfile import parse_dotenv, read_env_file, resolve
from raiox.tools.deploy.manifest import REPO, function_settings, manifest_functions, placeholders, read_manifest

CHECK = REPO / "infra" / "deployer-check"
NODE = shutil.which("node")
ENV_EXAMPLE = REPO / ".env.example"
NAMES = placeholders(read_manifest())
SITE = "virtualenv/lib/python3.11/site-packages/"
TRIGGERS = ["raiox/webhook: trigger 'raiox-intake-sweep'", "raiox/notify: trigger 'raiox-sweep'"]


def _need_node() -> None:
    if NODE and (CHECK / "node_modules" / "@nimbella" / "nimbella-deployer").is_dir():
        return
    message = f"node or {CHECK.relative_to(REPO)}/node_modules missing (run: npm ci --prefix {CHECK.relative_to(REPO)})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _deployer(project: Path, *args: str, shell: dict[str, str] | None = None,
              timeout: int = 120) -> tuple[int, dict[str, Any]]:
    """read-project.js on `project`, with none of the manifest's names in its environment (the deployer lets the
    shell win over --env) but those in `shell`; build.sh runs with this interpreter's pip."""
    _need_node()
    env = {k: v for k, v in os.environ.items() if k not in NAMES and k != "VAR" and k != "DO_API_KEY"}
    env.update({"RAIOX_BUILD_PYTHON": sys.executable, **(shell or {})})
    done = subprocess.run([str(NODE), str(CHECK / "read-project.js"), str(project), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def _as_shipped() -> dict[str, str]:
    """What `raiox deploy build --env .env` pastes when .env is .env.example unchanged and the shell sets nothing."""
    return resolve(NAMES, read_env_file(ENV_EXAMPLE), shell={}).values


@pytest.fixture(scope="module")
def build_do(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "do"
    build_do_project(out, _as_shipped())
    return out


@pytest.fixture(scope="module")
def dry_run(build_do: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """One full pass, shared: read, build (each build.sh), zip, and deploy against the recording client."""
    rc, summary = _deployer(build_do, "--env", str(ENV_EXAMPLE), "--list-files", "--keep", timeout=900)
    yield rc, summary
    if summary.get("kept"):
        shutil.rmtree(Path(summary["kept"]).parent, ignore_errors=True)


def _functions(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for p in summary["packages"] for f in p["functions"]}


def _requests(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in summary.get("requests", []) if r["op"] in ("actions.update", "packages.update")}


# --- reading: substitution, YAML, validation -------------------------------------------------------------------


def test_the_deployer_reads_build_do_with_env_example_as_shipped(build_do: Path) -> None:
    """Empty optional settings deploy (their lines are left out), nothing in a comment is substituted, and the
    trigger has DigitalOcean's current form."""
    rc, summary = _deployer(build_do, "--env", str(ENV_EXAMPLE), "--no-build")
    assert summary["deployer"] == {"package": "@nimbella/nimbella-deployer", "version": "4.3.10"}
    assert summary["stages"]["read"]["error"] is None, summary["stages"]["read"]
    assert summary["unresolvedVariables"] == []
    assert summary["triggerShim"]["errors"] == [] and summary["triggerShim"]["legacy"] == []
    assert summary["triggerShim"]["converted"] == TRIGGERS
    assert rc == 0


def _mutated(build_do: Path, tmp_path: Path, change: str) -> Path:
    """A copy of build/do's project.yml (the code is not needed to read it) with one of the mistakes the
    Python-side rules exist for."""
    project = tmp_path / "do"
    shutil.copytree(build_do, project, ignore=shutil.ignore_patterns("raiox", "virtualenv"))
    text = (project / "project.yml").read_text(encoding="utf-8")
    if change == "placeholder in a comment":
        text = text.replace("# The sweeper:", "# The sweeper (filled from ${VAR}):")
    elif change == "manifest unpruned":
        text = (REPO / "project.yml").read_text(encoding="utf-8")
    elif change == "legacy trigger form":
        for current, legacy in (("type: scheduled", "sourceType: scheduler"), ("scheduledDetails:", "sourceDetails:"),
                                ("body:", "withBody:")):
            text = text.replace(current, legacy)
    elif change == "cron the deployer refuses":
        text = text.replace('cron: "* * * * *"', 'cron: "every minute"')
    (project / "project.yml").write_text(text, encoding="utf-8")
    return project


@pytest.mark.parametrize(("change", "refused"), [
    ("placeholder in a comment", {"VAR"}),
    ("manifest unpruned", {"JOTFORM_FORM_IDS", "JOTFORM_XRAY_FIELD", "JOTFORM_NAME_FIELD", "JOTFORM_API_KEY",
                           "FETCH_ALLOWED_HOSTS", "ADMIN_ORIGIN", "NOTIFY_URL", "NOTIFY_WEBHOOK_URL",
                           "NOTIFY_WEBHOOK_SECRET", "JOTFORM_RECONCILE_MINUTES", "RAIOX_RETENTION_DAYS",
                           "RAIOX_RETENTION_UNDELIVERED_DAYS", "RAIOX_RETENTION_UNDECIDED_DAYS",
                           "RAIOX_RETENTION_FAILED_DAYS", "RAIOX_RETENTION_STALLED_DAYS", "ERASE_MAX_ATTEMPTS",
                           "REVIEW_LOGIN_MAX_FAILURES", "REVIEW_LOGIN_MAX_FAILURES_PER_NAME"}),
    ("legacy trigger form", "legacy"),
    ("cron the deployer refuses", "trigger error"),
])
def test_the_deployer_refuses_what_the_python_rules_prevent(build_do: Path, tmp_path: Path, change: str,
                                                            refused: Any) -> None:
    """Each rule `raiox deploy build` applies stands for one the deployer enforces: without it, the deploy stops
    (or, for the legacy trigger form, leans on a shim DigitalOcean says it will remove)."""
    rc, summary = _deployer(_mutated(build_do, tmp_path, change), "--env", str(ENV_EXAMPLE), "--no-build")
    if refused == "legacy":
        assert summary["triggerShim"]["legacy"] == TRIGGERS
    elif refused == "trigger error":
        assert rc == 1 and "not valid crontab syntax" in summary["triggerShim"]["errors"][0]
    else:
        assert rc == 1 and set(summary["unresolvedVariables"]) == refused


def test_the_shell_wins_over_the_env_file(build_do: Path, tmp_path: Path) -> None:
    """`process.env[NAME] || props[NAME]`: a non-empty shell variable wins, an empty one does not; `resolve` (what
    `raiox deploy build` and `raiox deploy check` use) says the same."""
    env_file = tmp_path / ".env"
    env_file.write_text("".join(line for line in ENV_EXAMPLE.read_text().splitlines(keepends=True)
                                if not line.startswith(("EMBED_TOKEN=", "NOTIFY_TOKEN="))), encoding="utf-8")
    shell = {"EMBED_TOKEN": "from-the-shell", "NOTIFY_TOKEN": ""}
    rc, summary = _deployer(build_do, "--env", str(env_file), "--no-build", shell=shell)
    assert rc == 1 and summary["unresolvedVariables"] == ["NOTIFY_TOKEN", "NOTIFY_TOKEN"]
    resolved = resolve(NAMES, read_env_file(env_file), shell=shell)
    assert resolved.get("EMBED_TOKEN") == "from-the-shell" and resolved.get("NOTIFY_TOKEN") == ""
    assert resolved.from_shell == {"EMBED_TOKEN"} and resolved.overridden == {"EMBED_TOKEN"}


def test_env_files_are_parsed_as_the_deployer_parses_them(tmp_path: Path) -> None:
    """The deployer reads --env with dotenv 16; parse_dotenv must agree, including where python-dotenv would not
    (an unquoted `#` ends the value)."""
    _need_node()
    text = ("PLAIN=abc\nHASH=abc#def\nSPACED = padded value  \nEMPTY=\nexport EXPORTED=yes\nSINGLE='a # b'\n"
            'DOUBLE="line\\nbreak"\nBACKTICK=`tick`\n# COMMENTED=no\nCOLON: yaml style\nTRAIL=x # note\n'
            "URL=https://example.org/a?b=c&d=e\n")
    env_file = tmp_path / "tricky.env"
    env_file.write_text(text, encoding="utf-8")
    script = ("const parsed = require('dotenv').parse(require('fs').readFileSync(process.argv[1]));"
              "process.stdout.write(JSON.stringify(parsed))")
    done = subprocess.run([str(NODE), "-e", script, str(env_file)], cwd=CHECK, capture_output=True, text=True,
                          check=True, env={**os.environ, "NODE_PATH": str(CHECK / "node_modules")})
    assert parse_dotenv(text) == json.loads(done.stdout)
    assert parse_dotenv(text)["HASH"] == "abc"


# --- building and deploying against a recording client ---------------------------------------------------------


def test_what_the_deployer_would_send(build_do: Path, dry_run: tuple[int, dict[str, Any]]) -> None:
    """Every request body the deployer would send: each function's environment exactly as the manifest gives it
    (only the settings its code reads), no caller-overridable parameters, limits, web: raw, under 48 MB."""
    rc, summary = dry_run
    assert rc == 0, json.dumps(summary["stages"], indent=1)
    manifest = read_manifest(build_do / "project.yml")
    requests = _requests(summary)
    assert {p["key"] for p in requests["raiox"]["parameters"]} == set(manifest["environment"])
    for function in manifest_functions(manifest):
        body = requests[f"{function.package}/{function.name}"]
        assert body["exec"]["kind"] == function.spec["runtime"] == "python:3.11"
        assert body["exec"]["main"] == function.spec["main"] and body["exec"]["binary"] is True
        assert body["exec"]["codeBytes"] < FUNCTION_LIMIT_BYTES  # base64 of the zip, as uploaded
        assert body["annotations"]["web-export"] is True and body["annotations"]["raw-http"] is True
        assert body["annotations"]["final"] is True and body["annotations"]["require-whisk-auth"] is False
        environment = {p["key"] for p in body["parameters"] if p["init"]}
        assert environment == set(function.spec.get("environment", {})), function.name
        assert not [p for p in body["parameters"] if not p["init"]]  # `parameters` could be overridden by callers
        assert body["limits"] == function.spec["limits"]
    assert {"SPACES_KEY", "SPACES_SECRET", "RAIOX_STORAGE"}.isdisjoint(function_settings(
        manifest, next(f for f in manifest_functions(manifest) if f.name == "notify")))
    # `raiox deploy build --measure` reports what the deployer uploads, or a little more, never less.
    kept = Path(summary["kept"]) / "packages" / "raiox"
    for function in manifest_functions(manifest):
        uploaded = requests[f"{function.package}/{function.name}"]["exec"]["codeBytes"]
        assert uploaded <= upload_size(kept / function.name) <= uploaded * 1.05, function.name
    # Without an API token the deployer skips triggers (src/triggers.ts): listed and validated, not created.
    triggers = [s for s in summary["stages"]["deploy"]["successes"] if s["kind"] == "trigger"]
    assert sorted(triggers, key=lambda t: t["name"]) == [{"name": name, "kind": "trigger", "skipped": True}
                                                        for name in ("raiox-intake-sweep", "raiox-sweep")]


def test_every_function_is_built_by_its_build_sh(dry_run: tuple[int, dict[str, Any]]) -> None:
    """A folder is built only when it holds build.sh (finder-builder.ts findSpecialFile); requirements.txt alone
    would be zipped as it is. The zip carries Linux CPython 3.11 wheels and the activate_this.py the runtime
    execs; pillow only where images are decoded; the admin page only in approve, which serves it."""
    rc, summary = dry_run
    assert rc == 0, json.dumps(summary["stages"], indent=1)
    functions = _functions(summary)
    assert set(functions) == {"webhook", "approve", "notify"}
    for name, function in functions.items():
        assert function["build"] == "build.sh", name
        files = set(function["zip"]["files"])
        assert {"__main__.py", "virtualenv/bin/activate_this.py", "raiox/review/http.py"} <= files
        assert "build.sh" not in files and not any(f.startswith("raiox/tools/") for f in files)
        assert any(f.startswith(SITE + "psycopg_binary/") and f.endswith("-x86_64-linux-gnu.so") for f in files)
        assert any(f.startswith(SITE + "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu") for f in files)
        assert not any(f.endswith(".pyc") or "/tests/" in f for f in files if f.startswith(SITE)), name
        assert any(f.startswith(SITE + "PIL/") for f in files) == (name != "approve"), name
        assert any(f.startswith(SITE + "boto3/") for f in files) == (name != "notify"), name
        admin = {f for f in files if f.startswith("admin/")}
        assert admin == ({f"admin/{page}" for page in ADMIN_FILES} if name == "approve" else set()), name
        assert function["zip"]["base64Bytes"] < FUNCTION_LIMIT_BYTES, (name, function["zip"]["base64Bytes"])


@pytest.mark.skipif(sys.version_info[:2] != (3, 11) or sys.platform != "linux", reason="needs CPython 3.11 on Linux")
def test_a_built_function_imports_like_the_runtime_would(dry_run: tuple[int, dict[str, Any]], tmp_path: Path) -> None:
    """Unzip each built function as the deployer zipped it and start it the way the runtime's launcher does: exec
    activate_this.py, load __main__.py, answer a web call. -I -S keeps this machine's packages out: the runtime
    promises none (RUNTIME_PACKAGES), so nothing but the zip and the standard library is on the path.
    test_function_runtime.py serves every route the same way."""
    rc, summary = dry_run
    assert rc == 0, json.dumps(summary["stages"], indent=1)
    kept = Path(summary["kept"])
    event = {"http": {"method": "GET", "path": "/health", "headers": {}, "body": "", "queryString": ""}}
    probe = (
        "import json, os, sys; sys.path[:0] = [os.getcwd()]\n"
        "f = 'virtualenv/bin/activate_this.py'\n"
        "exec(compile(open(f).read(), f, 'exec'), dict(__file__=os.path.abspath(f)))\n"
        "import importlib.util as u\n"
        "s = u.spec_from_file_location('main__', '__main__.py'); m = u.module_from_spec(s); s.loader.exec_module(m)\n"
        "import numpy, pydantic; here = os.path.join(os.getcwd(), 'virtualenv')\n"
        "assert numpy.__file__.startswith(here) and pydantic.__file__.startswith(here), numpy.__file__\n"
        "if os.path.isdir(os.path.join(here, 'lib/python3.11/site-packages/PIL')):\n"
        "    import io; from PIL import Image\n"
        "    for kind in ('JPEG', 'PNG', 'TIFF'):\n"
        "        b = io.BytesIO(); Image.new('L', (8, 8)).save(b, kind); Image.open(io.BytesIO(b.getvalue())).load()\n"
        f"print(json.dumps(m.main({event!r})))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAIOX_", "DATABASE_", "PYTHON"))}
    for name in ("webhook", "approve", "notify"):
        unpacked = tmp_path / name
        shutil.unpack_archive(kept / "packages" / "raiox" / name / "__deployer__.zip", unpacked, "zip")
        done = subprocess.run([sys.executable, "-I", "-S", "-c", probe], cwd=unpacked, capture_output=True,
                              text=True, check=False, env={**clean, "RAIOX_ENV": "prod"}, timeout=120)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert json.loads(done.stdout.strip().splitlines()[-1])["statusCode"] < 500, (name, done.stdout)
