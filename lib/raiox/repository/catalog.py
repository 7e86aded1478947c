"""SQL for the implant catalog and its reference images, including nearest-neighbour search."""

from __future__ import annotations

import numpy as np

from raiox.database import Connection
from raiox.models import Implant, Neighbor


def upsert_implant(
    conn: Connection,
    manufacturer: str,
    system: str,
    *,
    implant_type: str | None = None,
    connection: str | None = None,
    notes: str | None = None,
) -> Implant:
    """Insert the implant system, or fill in its descriptive fields; names match ignoring case."""
    row = conn.execute(
        """
        INSERT INTO implants (manufacturer, system, implant_type, connection, notes)
        VALUES (%(manufacturer)s, %(system)s, %(implant_type)s, %(connection)s, %(notes)s)
        ON CONFLICT (lower(manufacturer), lower(system)) DO UPDATE
           SET implant_type = coalesce(EXCLUDED.implant_type, implants.implant_type),
               connection   = coalesce(EXCLUDED.connection, implants.connection),
               notes        = coalesce(EXCLUDED.notes, implants.notes)
        RETURNING id, manufacturer, system, implant_type, connection, notes
        """,
        {
            "manufacturer": manufacturer.strip(),
            "system": system.strip(),
            "implant_type": implant_type,
            "connection": connection,
            "notes": notes,
        },
    ).fetchone()
    assert row is not None
    return Implant.model_validate(row)


def add_reference_image(
    conn: Connection,
    *,
    implant_id: int,
    storage_key: str,
    sha256: str,
    model_id: str,
    embedding: np.ndarray,
    source: str = "catalog",
    source_case_id: int | None = None,
) -> tuple[int, bool]:
    """Store one embedded reference image; returns (id, created). The same image and model twice is a no-op."""
    row = conn.execute(
        """
        WITH inserted AS (
            INSERT INTO reference_images
                   (implant_id, storage_key, sha256, source, source_case_id, model_id, embedding)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (implant_id, sha256, model_id) DO NOTHING
            RETURNING id
        )
        SELECT id, true AS created FROM inserted
        UNION ALL
        SELECT id, false FROM reference_images
         WHERE implant_id = %s AND sha256 = %s AND model_id = %s AND NOT EXISTS (SELECT 1 FROM inserted)
        """,
        (implant_id, storage_key, sha256, source, source_case_id, model_id, embedding,
         implant_id, sha256, model_id),
    ).fetchone()
    assert row is not None
    return int(row["id"]), bool(row["created"])


# The shape the HNSW index serves: ORDER BY the bare `<=>` operator with a LIMIT (see PLATFORM.md).
NEAREST_REFERENCES_SQL = """
    SELECT id AS reference_image_id, implant_id, storage_key,
           1 - (embedding <=> %(query)s) AS similarity
      FROM reference_images
     WHERE model_id = %(model_id)s
     ORDER BY embedding <=> %(query)s
     LIMIT %(limit)s
"""


def nearest_references(conn: Connection, query: np.ndarray, model_id: str, limit: int) -> list[Neighbor]:
    rows = conn.execute(NEAREST_REFERENCES_SQL, {"query": query, "model_id": model_id, "limit": limit})
    return [Neighbor.model_validate(row) for row in rows]
