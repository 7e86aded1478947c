"""Reliability fixtures: real `raiox dev` / `raiox worker` processes on the test's database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.support import OwnPostgres, Processes


@pytest.fixture
def processes(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[Processes]:
    started = Processes(tmp_path, tiny_checkpoint)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL of this test alone, to stop and start (the session's server is shared by every other test)."""
    postgres = OwnPostgres()
    try:
        yield postgres
    finally:
        postgres.server.cleanup()  # stops it if it runs, then deletes its data
