"""SQL for a case's X-rays (`case_images`): recording them at intake, fetching and storing pending ones, their
embeddings and failures, and reading them back for embed and for the review page."""

from __future__ import annotations

from typing import Any, Literal

from raiox.database import Connection
from raiox.models import Record
from raiox.repository import rows

ImageStatus = Literal["pending", "stored", "embedded", "failed"]


class CaseImage(Record):
    """One X-ray of a case as embed and the review page read it (never its uploaded bytes)."""

    id: int
    case_id: int
    position: int
    storage_key: str | None
    status: ImageStatus
    error: str | None
    width: int | None
    height: int | None
    content_type: str | None
    model_id: str | None
    pixel_spacing_row_mm: float | None
    pixel_spacing_col_mm: float | None


class PendingImage(Record):
    """An X-ray still to fetch (its URL) or to store (its uploaded bytes)."""

    id: int
    case_id: int
    position: int
    source_url: str | None
    upload: bytes | None


class FetchOutcome(Record):
    """An X-ray submitted by URL and how its fetch ended so far: its status and, when it failed, why."""

    source_url: str
    status: ImageStatus
    error: str | None


_IMAGE_COLUMNS = """id, case_id, position, storage_key, status, error, width, height, content_type, model_id,
                    pixel_spacing_row_mm, pixel_spacing_col_mm"""


def add_case_image(
    conn: Connection,
    *,
    case_id: int,
    position: int,
    storage_key: str | None = None,
    sha256: str | None = None,
    size_bytes: int | None = None,
    content_type: str | None = None,
    width: int | None = None,
    height: int | None = None,
    source_url: str | None = None,
    upload: bytes | None = None,
    error: str | None = None,
) -> int:
    """Record one X-ray of a case: stored; pending (a URL to fetch, or uploaded bytes waiting to be stored);
    or failed with its error."""
    status = "failed" if error else "stored" if storage_key else "pending"
    row = conn.execute(
        """
        INSERT INTO case_images (case_id, position, source_url, storage_key, sha256, size_bytes,
                                 content_type, width, height, upload, status, error)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING id
        """,
        (case_id, position, source_url, storage_key, sha256, size_bytes, content_type, width, height,
         None if error else upload, status, error),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def images_of_cases(conn: Connection, case_ids: list[int]) -> list[CaseImage]:
    return rows.many(conn, CaseImage, f"""SELECT {_IMAGE_COLUMNS} FROM case_images WHERE case_id = ANY(%s)
                                          ORDER BY case_id, position""", (case_ids,))


def case_images(conn: Connection, case_id: int) -> list[CaseImage]:
    return rows.many(conn, CaseImage, f"SELECT {_IMAGE_COLUMNS} FROM case_images WHERE case_id = %s ORDER BY position",
                     (case_id,))


def save_image_embedding(conn: Connection, image_id: int, model_id: str, embedding: Any) -> None:
    conn.execute(
        """UPDATE case_images SET status = 'embedded', error = NULL, model_id = %s, embedding = %s,
                  embedded_at = now() WHERE id = %s""",
        (model_id, embedding, image_id),
    )


def mark_image_failed(conn: Connection, image_id: int, error: str) -> None:
    conn.execute("UPDATE case_images SET status = 'failed', error = %s, upload = NULL WHERE id = %s",
                 (error[:2000], image_id))


def pending_images(conn: Connection, case_ids: list[int]) -> list[PendingImage]:
    """The X-rays of these cases still waiting to be fetched or stored, with their URL or uploaded bytes."""
    return rows.many(
        conn, PendingImage,
        """SELECT id, case_id, position, source_url, upload FROM case_images
            WHERE case_id = ANY(%s) AND status = 'pending' ORDER BY case_id, position""",
        (case_ids,),
    )


def fetch_outcomes(conn: Connection) -> list[FetchOutcome]:
    """Every X-ray submitted by URL, in the order recorded, with its status and error (`raiox bench intake`)."""
    return rows.many(conn, FetchOutcome,
                     "SELECT source_url, status, error FROM case_images WHERE source_url IS NOT NULL ORDER BY id")


def store_image(conn: Connection, image_id: int, *, storage_key: str, sha256: str, size_bytes: int,
                content_type: str, width: int, height: int,
                pixel_spacing_mm: tuple[float, float] | None = None) -> None:
    """A pending X-ray is in object storage now: its key and what it is (with its pixel spacing, row then
    column, when the file says it); the uploaded bytes are dropped."""
    row_mm, col_mm = pixel_spacing_mm or (None, None)
    conn.execute(
        """UPDATE case_images SET status = 'stored', storage_key = %s, sha256 = %s, size_bytes = %s,
                  content_type = %s, width = %s, height = %s, pixel_spacing_row_mm = %s,
                  pixel_spacing_col_mm = %s, upload = NULL, error = NULL
            WHERE id = %s AND status = 'pending'""",
        (storage_key, sha256, size_bytes, content_type, width, height, row_mm, col_mm, image_id),
    )


def note_image_error(conn: Connection, image_id: int, error: str) -> None:
    """Why the last try to fetch a still-pending X-ray failed (it will be tried again)."""
    conn.execute("UPDATE case_images SET error = %s WHERE id = %s AND status = 'pending'", (error[:2000], image_id))


def usable_images(conn: Connection, case_id: int) -> int:
    row = conn.execute("SELECT count(*) AS n FROM case_images WHERE case_id = %s AND status IN ('stored', 'embedded')",
                       (case_id,)).fetchone()
    return int(row["n"]) if row else 0


def image_errors(conn: Connection, case_id: int) -> list[str]:
    return [row["error"] for row in conn.execute(
        "SELECT error FROM case_images WHERE case_id = %s AND error IS NOT NULL ORDER BY position", (case_id,))]


def reopen_failed_images(conn: Connection, case_id: int) -> int:
    """A retry: failed X-rays that came from a URL are fetched again; returns how many."""
    return conn.execute(
        """UPDATE case_images SET status = 'pending', error = NULL
            WHERE case_id = %s AND status = 'failed' AND source_url IS NOT NULL""",
        (case_id,),
    ).rowcount
