"""README's "Using it", run line by line as a lab would on a fresh home: the demo (signed in, a sample case
decided and delivered), its own catalog from docs/examples, a reviewer, `raiox dev`, a first submission that
arrives ready with candidates, `eval --folder` on the labelled examples, and `db migrate` of a real database.

The only changes to the lines: the CLI runs from this test's Python, `raiox dev` gets a free port (and the
URL that names it follows), and DATABASE_URL names a new database of the test server."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import requests

from raiox.tools.local import BASE_PATH, SETTING_NAMES, free_port
from raiox.tools.waiting import wait_until
from support import REPO

RAIOX = ".venv/bin/raiox"
PASSWORD = "a long enough password"
README_DATABASE = "postgresql://raiox:PASSWORD@db.example.org:25060/raiox"


def using_it() -> list[str]:
    """The commands of README's "Using it" code block, comments removed."""
    section = (REPO / "README.md").read_text().split("## Using it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block, "README's Using it has no sh block"
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


class Lab:
    """A shell in the repository with a fresh RAIOX_HOME and nothing else of Raiox's settings."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
        self.env.update({"RAIOX_HOME": str(tmp_path / "home"), "PASSWORD": PASSWORD, "OMP_NUM_THREADS": "1"})
        self.logs = 0

    def run(self, line: str) -> str:
        done = subprocess.run(["bash", "-c", line], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
        return done.stdout + done.stderr

    def start(self, line: str) -> tuple[subprocess.Popen[bytes], Path]:
        self.logs += 1
        log = self.tmp_path / f"dev-{self.logs}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=REPO, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return process, log


def _ready(process: subprocess.Popen[bytes], log: Path) -> str:
    def said() -> str:
        assert process.poll() is None, log.read_text()
        return "Ctrl-C stops it" in (text := log.read_text()) and text

    return wait_until(said, 600, f"{log.name} to be serving")


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """Ctrl-C, as README says."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0 and "stopped" in log.read_text(), log.read_text()


def _sign_in(api: str, name: str, password: str) -> dict[str, str]:
    answer = requests.post(f"{api}/login", json={"name": name, "password": password}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_using_it_runs_as_written(tmp_path: Path, empty_db_url: str) -> None:
    lines = using_it()
    assert all(line.startswith(RAIOX) or RAIOX in line for line in lines), lines
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = f"{base}{BASE_PATH}/approve"
    cli = f"{shlex.quote(sys.executable)} -m raiox.tools.cli"
    lab = Lab(tmp_path)
    ran = set()
    for line in lines:
        command = line.replace(RAIOX, cli).replace("http://127.0.0.1:8080", base).replace(README_DATABASE,
                                                                                            empty_db_url)
        words = line.split(RAIOX, 1)[1].split()
        ran.add(" ".join(w for w in words[:2] if not w.startswith("-")))
        if words[0] == "dev":
            dev, log = lab.start(f"{command} --port {port}")
            try:
                printed = _ready(dev, log)
                if "--demo" in words:
                    _the_demo_shows_the_product(api, printed)
                    _stop(dev, log)
            except BaseException:
                dev.kill()
                raise
            continue
        printed = lab.run(command)
        if words[:2] == ["catalog", "import"]:
            assert "4 implant rows, 8 images: 8 references added" in printed, printed
        elif words[:2] == ["catalog", "import-specs"]:
            assert re.search(r"\d+ systems from spec sheets: \d+ reference films rendered", printed), printed
        elif words[:2] == ["reviewer", "add"]:
            assert "reviewer ana added" in printed and PASSWORD not in printed
        elif words[0] == "simulate-webhook":
            assert "HTTP 202" in printed and "1 film(s) fetched" in printed, printed
            _the_submission_is_ready(api)
        elif words[0] == "eval":
            assert re.search(r"4 systems, 4 new films — top-1 \d+\.\d%, top-3 \d+\.\d%", printed), printed
        elif words[:2] == ["db", "migrate"]:
            assert "applied 0001_initial" in printed and "is up to date" in printed, printed
    _stop(dev, log)  # the plain `raiox dev`
    assert ran == {"dev", "catalog import", "catalog import-specs", "reviewer add", "simulate-webhook", "eval",
                   "db migrate"}


def _the_demo_shows_the_product(api: str, printed: str) -> None:
    """A person who just cloned the repository signs in with the printed sign-in, finds sample cases matched
    in the queue, and a decision is delivered (to a local stand-in for Jotform's API)."""
    assert "sample cases are ready for review" in printed, printed
    name, password = re.search(r"sign in as\s+(\S+) / (\S+)", printed).groups()
    auth = _sign_in(api, name, password)
    queue = requests.get(f"{api}/cases", headers=auth, timeout=30).json()
    assert queue["total"] == 6 and all(case["top"] for case in queue["cases"])
    case_id = queue["cases"][0]["id"]
    decided = requests.post(f"{api}/cases/{case_id}/decision", json={"action": "approve", "rank": 1},
                            headers=auth, timeout=30)
    assert decided.status_code == 200, decided.text
    wait_until(lambda: requests.get(f"{api}/cases/{case_id}", headers=auth, timeout=30).json()
               ["delivery"]["state"] == "notified", 120, "the decision to be delivered")


def _the_submission_is_ready(api: str) -> None:
    """The first submission (a film of Helix Classic EX) waits in ana's queue with that system among its
    candidates."""
    auth = _sign_in(api, "ana", PASSWORD)

    def submitted() -> dict | None:
        cases = requests.get(f"{api}/cases", params={"status": "ready"}, headers=auth, timeout=30).json()["cases"]
        return next((case for case in cases if not case["submitter_name"] or "Demo" not in case["submitter_name"]),
                    None)

    case = wait_until(submitted, 120, "the submission to be ready")
    detail = requests.get(f"{api}/cases/{case['id']}", headers=auth, timeout=30).json()
    assert "Helix Classic EX" in [c["system"] for c in detail["images"][0]["candidates"]]
