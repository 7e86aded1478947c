"""`raiox dev --demo` on a fresh home: a person who just cloned the repository signs in and finds sample cases
matched in the queue, and a decision is delivered (to a local stand-in for Jotform's API)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import requests

from raiox.tools.local import BASE_PATH, SETTING_NAMES, free_port
from raiox.tools.processes import RaioxProcess
from raiox.tools.waiting import wait_until


def test_a_first_run_shows_the_product(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env.update({"RAIOX_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"})
    port = free_port()
    dev = RaioxProcess.cli(["dev", "--demo", "--port", str(port)], env, tmp_path / "dev.log", cwd=tmp_path)
    try:
        wait_until(lambda: dev.check_alive() or "Ctrl-C stops it" in dev.output(), 600, "raiox dev --demo to start")
        printed = dev.output()
        assert "sample cases are ready for review" in printed, printed
        name, password = re.search(r"sign in as\s+(\S+) / (\S+)", printed).groups()
        api = f"http://127.0.0.1:{port}{BASE_PATH}/approve"
        token = requests.post(f"{api}/login", json={"name": name, "password": password}, timeout=30).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        queue = requests.get(f"{api}/cases", headers=auth, timeout=30).json()
        assert queue["total"] == 6 and all(case["top"] for case in queue["cases"])
        case_id = queue["cases"][0]["id"]
        decided = requests.post(f"{api}/cases/{case_id}/decision", json={"action": "approve", "rank": 1},
                                headers=auth, timeout=30)
        assert decided.status_code == 200, decided.text

        def delivered() -> bool:
            detail = requests.get(f"{api}/cases/{case_id}", headers=auth, timeout=30).json()
            return detail["delivery"]["state"] == "notified"

        wait_until(delivered, 120, "the decision to be delivered")
    finally:
        dev.stop()
