"""Helpers of the reliability tests: Raiox child processes for one test, the test's view of the database."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from raiox.tools.local import BASE_PATH, SETTING_NAMES
from raiox.tools.processes import RaioxProcess, start_dev, start_worker

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    import pgserver
    from pgserver._commands import pg_ctl


def query(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    """One statement on its own short connection (the test's view of the database); its rows, if any."""
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def webhook_url(base: str, token: str | None = None) -> str:
    return f"{base}{BASE_PATH}/webhook" + (f"?token={token}" if token else "")


class Processes:
    """Starts Raiox processes for one test and stops every one of them afterwards, failed or not."""

    def __init__(self, root: Path, tiny_checkpoint: Path) -> None:
        self.root = root
        self.tiny_checkpoint = tiny_checkpoint
        self.started: list[RaioxProcess] = []

    def env(self, database_url: str, home: Path, **settings: str) -> dict[str, str]:
        """The parent's environment without Raiox settings, plus the test database, home and tiny encoder."""
        env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
        env.update({"DATABASE_URL": database_url, "RAIOX_HOME": str(home), "RAIOX_CLIP_MODEL": "raiox-tiny-vit",
                    "RAIOX_CLIP_PRETRAINED": str(self.tiny_checkpoint), "RAIOX_DEVICE": "cpu",
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        env.update(settings)
        return env

    def _log(self, name: str) -> Path:
        return self.root / f"{name}-{len(self.started)}.log"

    def dev(self, env: dict[str, str], name: str = "dev") -> tuple[str, RaioxProcess]:
        """`raiox dev` on a free port; returns (base URL, process) once it answers."""
        base, process = start_dev(env, self._log(name), cwd=self.root)
        self.started.append(process)
        return base, process

    def worker(self, env: dict[str, str], name: str = "worker") -> RaioxProcess:
        """`raiox worker --poll 0.2`, returned once its encoder is loaded."""
        process = start_worker(env, self._log(name), cwd=self.root)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


class OwnPostgres:
    """A PostgreSQL of this test alone (the session's server is shared by every other test)."""

    def __init__(self) -> None:
        self.server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="raiox-rel-pg-")), cleanup_mode="delete")
        self.url = self.server.get_uri()

    def stop(self) -> None:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()
        assert self.server.get_uri() == self.url
