"""`raiox dev` and its embedded PostgreSQL: SIGTERM and SIGINT stop both; a server an earlier run left running
(that run killed outright) is found and reused by the next run, which stops it on its way out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from raiox.tools.local import SETTING_NAMES
from raiox.tools.processes import start_dev
from raiox.tools.waiting import wait_until


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env.update({"RAIOX_HOME": str(home), "OMP_NUM_THREADS": "1"})
    return env


def _postmaster(home: Path) -> int:
    """The embedded server's process id, from its postmaster.pid (first line)."""
    return int((home / "pg" / "postmaster.pid").read_text().split()[0])


def _postmasters_of(home: Path) -> list[int]:
    """Every running postgres postmaster serving `home`'s data folder (duplicates would show here)."""
    pgdata = str((home / "pg").resolve())
    found = []
    for process in psutil.process_iter(["name", "cmdline", "ppid"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and pgdata in cmdline and "-D" in cmdline:
            found.append(process.pid)
    return found


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_dev_and_its_database(tmp_path: Path, stop_with: signal.Signals) -> None:
    home = tmp_path / "home"
    _, dev = start_dev(_env(home), tmp_path / "dev.log", cwd=tmp_path)
    try:
        postmaster = _postmaster(home)
        assert psutil.pid_exists(postmaster)
        dev.popen.send_signal(stop_with)
        assert dev.popen.wait(60) == 0, dev.tail()
    finally:
        dev.kill()
    assert "stopped" in dev.output()
    wait_until(lambda: _stopped(postmaster), 30, "the embedded PostgreSQL to stop")
    assert not (home / "pg" / "postmaster.pid").exists()


def test_a_database_left_running_is_reused_then_stopped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _, crashed = start_dev(_env(home), tmp_path / "crashed.log", cwd=tmp_path)
    left = _postmaster(home)
    crashed.kill()  # SIGKILL: no cleanup; before, no later run would ever stop this server
    assert psutil.pid_exists(left) and _postmasters_of(home) == [left]

    _, again = start_dev(_env(home), tmp_path / "again.log", cwd=tmp_path)
    try:
        assert _postmaster(home) == left and _postmasters_of(home) == [left], "started a second server"
        assert "left by process" in again.output() and str(crashed.pid) in again.output()
        # A command run meanwhile shares the server and leaves it running for dev.
        status = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "status"], env=_env(home), cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert psutil.pid_exists(left)
    finally:
        again.stop()
    wait_until(lambda: _stopped(left), 30, "the reused PostgreSQL to stop")
