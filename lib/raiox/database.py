"""Connections to PostgreSQL: where the database is (configured or embedded) and the pooled access to it."""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from raiox.settings import Settings

if TYPE_CHECKING:  # pgserver is the `local` extra's, loaded only when DATABASE_URL is unset
    from pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)

Connection = psycopg.Connection[dict[str, Any]]

_embedded_servers: dict[Path, PostgresServer] = {}
_embedded_lock = threading.Lock()


class DatabaseNotMigrated(RuntimeError):
    """The database lacks the pgvector extension or Raiox tables: run `raiox db migrate`."""


def embedded_database_url(pgdata: Path) -> str:
    """Start (or reuse) the pgserver-embedded PostgreSQL whose data lives in `pgdata`; return its URL."""
    pgdata = pgdata.resolve()
    with _embedded_lock:
        server = _embedded_servers.get(pgdata)
        if server is None:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                try:
                    from pgserver.postgres_server import get_server
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise RuntimeError(
                        "DATABASE_URL is unset and the embedded PostgreSQL is not installed: "
                        "set DATABASE_URL or install raiox[local]"
                    ) from exc
                _forget_gone_holders(pgdata)
                server = get_server(pgdata, cleanup_mode="stop")
            _embedded_servers[pgdata] = server
            log.info("embedded PostgreSQL running with data in %s", pgdata)
        return str(server.get_uri())


def _forget_gone_holders(pgdata: Path) -> None:
    """pgserver stops its server when the last process holding it lets go, and lists the holders in
    `.handle_pids.json`. A holder that died without letting go (SIGKILL, a crash, an old `raiox dev` stopped with
    SIGTERM) stays listed, so no later process would ever stop the server again. Forget holders that are gone:
    a server they left running is then reused (never started twice) and stopped by the last process using it."""
    from pgserver.postgres_server import PostgresServer

    holders = pgdata / ".handle_pids.json"
    if not holders.is_file():
        return
    with PostgresServer._lock:  # pgserver's own lock around that file
        try:
            listed = [int(pid) for pid in json.loads(holders.read_text())]
        except (OSError, ValueError, TypeError):
            listed = []
        alive = [pid for pid in listed if _process_exists(pid)]
        if alive != listed:
            holders.write_text(json.dumps(alive))
    gone = sorted(set(listed) - set(alive))
    if gone and (pgdata / "postmaster.pid").is_file():
        log.warning("the embedded PostgreSQL in %s was left by process(es) %s, which are gone: reusing it (it "
                    "stops when the last Raiox process using it exits)", pgdata, ", ".join(map(str, gone)))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return True


def stop_embedded_database(pgdata: Path) -> None:
    """Stop the embedded server of `pgdata` if this process started it (before its folder is deleted)."""
    with _embedded_lock:
        server = _embedded_servers.pop(pgdata.resolve(), None)
    if server is not None:
        server.cleanup()


def database_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the embedded server under $RAIOX_HOME/pg."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded_database_url(settings.raiox_home / "pg")


def connect(url: str, **kwargs: Any) -> Connection:
    """One plain connection with dict rows (no pgvector adapter: usable before migrations ran)."""
    return psycopg.connect(url, row_factory=dict_row, **kwargs)


def _configure(conn: psycopg.Connection[Any]) -> None:
    try:
        register_vector(conn)
    except psycopg.ProgrammingError as exc:
        raise DatabaseNotMigrated("pgvector is not installed in this database: run `raiox db migrate`") from exc
    conn.commit()


class Database:
    """A connection pool with pgvector registered on every connection."""

    def __init__(self, url: str, *, max_size: int = 5, min_size: int = 0, timeout: float = 10.0) -> None:
        self.url = url
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,  # how long a caller waits for a connection before PoolTimeout (a 503)
            kwargs={"row_factory": dict_row, "connect_timeout": max(1, int(timeout))},
            configure=_configure,
            check=ConnectionPool.check_connection,  # drop connections a database restart broke
            open=False,
            name="raiox",
        )
        self.pool.open()

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(database_url(settings), max_size=settings.database_pool_max,
                   timeout=settings.database_timeout_seconds)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A pooled connection inside one transaction: committed on success, rolled back on error."""
        with self.pool.connection() as conn:
            with conn.transaction():
                yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A pooled connection outside any transaction, for statements that refuse one (CREATE INDEX
        CONCURRENTLY); it goes back to the pool in its usual mode."""
        with self.pool.connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                if not conn.closed:
                    conn.autocommit = False

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
