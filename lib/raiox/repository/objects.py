"""SQL for the object-deletion outbox: storage keys whose last reference was erased, deleted after the commit."""

from __future__ import annotations

from raiox.database import Connection

_UNREFERENCED = """NOT EXISTS (SELECT 1 FROM case_images WHERE case_images.storage_key = object_deletions.storage_key)
               AND NOT EXISTS (SELECT 1 FROM reference_images
                                WHERE reference_images.storage_key = object_deletions.storage_key)"""


def request_deletions(conn: Connection, keys: list[str]) -> None:
    conn.execute("INSERT INTO object_deletions (storage_key) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                 (keys,))


def due_deletions(conn: Connection, *, limit: int = 500) -> list[str]:
    """Keys to delete now: still in the outbox and, content being shared, referenced by nothing (another
    case with the same bytes keeps its object); keys referenced again leave the outbox."""
    conn.execute(f"DELETE FROM object_deletions WHERE NOT ({_UNREFERENCED})")
    return [row["storage_key"] for row in conn.execute(
        f"SELECT storage_key FROM object_deletions WHERE {_UNREFERENCED} ORDER BY requested_at LIMIT %s", (limit,))]


def deleted(conn: Connection, key: str) -> None:
    conn.execute("DELETE FROM object_deletions WHERE storage_key = %s", (key,))
