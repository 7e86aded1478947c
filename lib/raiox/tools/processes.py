"""Raiox as child processes (`raiox dev`, `raiox worker`, a function under functions-framework) for
benchmarks and tests: each with its own environment and log file, started and stopped the same way."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from raiox.tools.local import BASE_PATH, free_port
from raiox.tools.waiting import wait_until


class RaioxProcess:
    """A child process with its own environment; its output goes to `log`, read back on failure."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log: Path, *, cwd: Path) -> None:
        self.command = list(command)
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(self.command, env=dict(env), cwd=cwd, stdout=self._log_file,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    @classmethod
    def cli(cls, args: Sequence[str], env: Mapping[str, str], log: Path, *, cwd: Path) -> RaioxProcess:
        """`python -m raiox.tools.cli -v ARGS`."""
        return cls([sys.executable, "-m", "raiox.tools.cli", "-v", *args], env, log, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{' '.join(self.command[2:])} exited:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye (a crashed worker)."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(30)

    def stop(self) -> None:
        """SIGINT (Ctrl-C), then SIGKILL if it does not end within 15 s."""
        if self.alive():
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()

    def wait_until_serving(self, url: str, timeout: float = 120) -> None:
        """Until GET `url` answers 200 (or the process dies)."""

        def up() -> bool:
            self.check_alive()
            try:
                return requests.get(url, timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(up, timeout, f"{url} to answer", interval=0.1)

    def wait_for_output(self, text: str, timeout: float = 120) -> None:
        def said() -> bool:
            self.check_alive()
            return text in self.output()

        wait_until(said, timeout, f"{text!r} in {self.log.name}", interval=0.1)


def start_dev(env: Mapping[str, str], log: Path, *, cwd: Path) -> tuple[str, RaioxProcess]:
    """`raiox dev` on a free port; returns (base URL, process) once it answers."""
    port = free_port()
    process = RaioxProcess.cli(["dev", "--port", str(port)], env, log, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    process.wait_until_serving(f"{base}{BASE_PATH}/embed/health")
    return base, process


def start_worker(env: Mapping[str, str], log: Path, *, cwd: Path, poll: float = 0.2) -> RaioxProcess:
    """`raiox worker`, returned once its encoder is loaded (it says so first)."""
    process = RaioxProcess.cli(["worker", "--poll", str(poll)], env, log, cwd=cwd)
    process.wait_for_output(f"worker {socket.gethostname()}:{process.pid} with ")
    return process
