"""SQL for heartbeats: when each sweeper, worker and function last reported in, for the system view."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from raiox.database import Connection


def beat(conn: Connection, name: str, details: dict[str, Any] | None = None) -> None:
    conn.execute(
        """INSERT INTO heartbeats (name, at, details) VALUES (%s, now(), %s)
           ON CONFLICT (name) DO UPDATE SET at = now(), details = EXCLUDED.details""",
        (name, Jsonb(details or {})),
    )


def all_heartbeats(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT name, at, extract(epoch FROM now() - at)::float AS seconds_ago, details FROM heartbeats ORDER BY name"
    ).fetchall()
