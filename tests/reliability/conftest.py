"""Reliability fixtures: real `raiox dev` / `raiox worker` processes on the test's database, and helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from raiox.tools.commands.local import free_port
from raiox.tools.devserver import BASE_PATH

# Settings a child process must not inherit from the machine running the tests.
_RAIOX_PREFIXES = ("RAIOX_", "DATABASE_", "SPACES_", "WEBHOOK_", "JOTFORM_", "FETCH_", "EMBED_", "NOTIFY_",
                   "REVIEW_", "ADMIN_", "LEARN_")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def query(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    """One statement on its own short connection (the test's view of the database); its rows, if any."""
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


class RaioxProcess:
    """`python -m raiox.tools.cli ARGS` with its own environment; output goes to a log file read on failure."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.args = args
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen([sys.executable, "-m", "raiox.tools.cli", "-v", *args], env=env, cwd=cwd,
                                      stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye (a crashed worker)."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(30)

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


class Processes:
    """Starts Raiox processes for one test and stops every one of them afterwards, failed or not."""

    def __init__(self, root: Path, tiny_checkpoint: Path) -> None:
        self.root = root
        self.tiny_checkpoint = tiny_checkpoint
        self.started: list[RaioxProcess] = []

    def env(self, database_url: str, home: Path, **settings: str) -> dict[str, str]:
        """The parent's environment without Raiox settings, plus the test database, home and tiny encoder."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_RAIOX_PREFIXES)}
        env.update({"DATABASE_URL": database_url, "RAIOX_HOME": str(home), "RAIOX_CLIP_MODEL": "raiox-tiny-vit",
                    "RAIOX_CLIP_PRETRAINED": str(self.tiny_checkpoint), "RAIOX_DEVICE": "cpu",
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        env.update(settings)
        return env

    def start(self, args: list[str], env: dict[str, str], name: str) -> RaioxProcess:
        process = RaioxProcess(args, env, self.root / f"{name}-{len(self.started)}.log", self.root)
        self.started.append(process)
        return process

    def dev(self, env: dict[str, str], name: str = "dev") -> tuple[str, RaioxProcess]:
        """`raiox dev` on a free port; returns (base URL, process) once it answers."""
        port = free_port()
        process = self.start(["dev", "--port", str(port)], env, name)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert process.alive(), f"raiox dev exited:\n{process.tail()}"
            try:
                return requests.get(f"{base}{BASE_PATH}/embed/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, 90, f"raiox dev to answer on {base}", interval=0.2)
        return base, process

    def worker(self, env: dict[str, str], name: str = "worker") -> RaioxProcess:
        """`raiox worker --poll 0.2`, returned once its encoder is loaded (it says so on stderr)."""
        process = self.start(["worker", "--poll", "0.2"], env, name)

        def ready() -> bool:
            assert process.alive(), f"raiox worker exited:\n{process.tail()}"
            return f"worker {socket.gethostname()}:{process.pid} with" in process.output()

        wait_for(ready, 120, "raiox worker to load its encoder", interval=0.2)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture
def processes(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[Processes]:
    started = Processes(tmp_path, tiny_checkpoint)
    try:
        yield started
    finally:
        started.stop_all()


def webhook_url(base: str, token: str | None = None) -> str:
    return f"{base}{BASE_PATH}/webhook" + (f"?token={token}" if token else "")
