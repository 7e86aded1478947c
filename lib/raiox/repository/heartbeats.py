"""SQL for heartbeats: when each sweeper, worker and function last reported in, for the system view."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from raiox.database import Connection
from raiox.models import Record
from raiox.repository import rows


class Heartbeat(Record):
    """A sweeper's, worker's or function's last report: when, how long ago, and what it said."""

    name: str
    at: datetime
    seconds_ago: float
    details: dict[str, Any]


def beat(conn: Connection, name: str, details: dict[str, Any] | None = None) -> None:
    conn.execute(
        """INSERT INTO heartbeats (name, at, details) VALUES (%s, now(), %s)
           ON CONFLICT (name) DO UPDATE SET at = now(), details = EXCLUDED.details""",
        (name, Jsonb(details or {})),
    )


def all_heartbeats(conn: Connection) -> list[Heartbeat]:
    return rows.many(
        conn, Heartbeat,
        "SELECT name, at, extract(epoch FROM now() - at)::float AS seconds_ago, details FROM heartbeats ORDER BY name",
    )
