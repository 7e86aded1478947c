"""SQL of the implants found on each X-ray (`image_findings`); the candidates ranked for each of them are in
`raiox.repository.matches`."""

from __future__ import annotations

from typing import Any

import numpy as np
from pgvector import Vector
from psycopg.types.json import Jsonb
from pydantic import ConfigDict

from raiox.database import Connection
from raiox.models import Record
from raiox.repository import rows


class FindingRow(Record):
    """One implant of an X-ray as the embed step writes it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    position: int
    found: bool
    crop_key: str | None
    summary: dict[str, Any]
    embedding: np.ndarray


class Finding(Record):
    """One implant of an X-ray under the model that embedded the X-ray (position 0: the most implant-like)."""

    case_image_id: int
    position: int
    found: bool
    crop_key: str | None
    summary: dict[str, Any]


class LearnableFinding(Record):
    """An embedded X-ray of a case (`id`, its film's key and sha256, its model) with the implant on it to learn
    a reference from: its vector, crop and measurements."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: int
    storage_key: str
    sha256: str
    model_id: str
    embedding: Vector
    crop_key: str | None
    summary: dict[str, Any]


def replace_findings(conn: Connection, image_id: int, model_id: str, findings: list[FindingRow]) -> None:
    """The X-ray's implants under this model, replacing earlier ones (a re-run leaves one set)."""
    conn.execute("DELETE FROM image_findings WHERE case_image_id = %s AND model_id = %s", (image_id, model_id))
    with conn.cursor() as cursor:
        cursor.executemany(
            """INSERT INTO image_findings (case_image_id, model_id, position, found, crop_key, summary, embedding)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            [(image_id, model_id, f.position, f.found, f.crop_key, Jsonb(f.summary), f.embedding) for f in findings],
        )


def findings_of_case(conn: Connection, case_id: int) -> list[Finding]:
    """The implants of the case's X-rays under the model that embedded each X-ray, in order."""
    return rows.many(
        conn, Finding,
        """SELECT image_findings.case_image_id, image_findings.position, image_findings.found,
                  image_findings.crop_key, image_findings.summary
             FROM image_findings
             JOIN case_images ON case_images.id = image_findings.case_image_id
                             AND case_images.model_id = image_findings.model_id
            WHERE case_images.case_id = %s
            ORDER BY case_images.position, image_findings.position""",
        (case_id,),
    )


def learnable_findings(conn: Connection, case_id: int, implant_id: int) -> list[LearnableFinding]:
    """Per embedded X-ray of the case, the implant to learn `implant_id` from: the one that ranked it best, else
    the most implant-like; with what a reference needs (film key, sha256, model id, vector, crop, summary)."""
    return rows.many(
        conn, LearnableFinding,
        """SELECT DISTINCT ON (case_images.id)
                  case_images.id, case_images.storage_key, case_images.sha256, case_images.model_id,
                  image_findings.embedding, image_findings.crop_key, image_findings.summary
             FROM case_images
             JOIN image_findings ON image_findings.case_image_id = case_images.id
                                AND image_findings.model_id = case_images.model_id
             LEFT JOIN match_results ON match_results.case_image_id = case_images.id
                                    AND match_results.model_id = case_images.model_id
                                    AND match_results.finding_position = image_findings.position
                                    AND match_results.implant_id = %(implant)s
            WHERE case_images.case_id = %(case)s AND case_images.status = 'embedded'
              AND case_images.sha256 IS NOT NULL
            ORDER BY case_images.id, match_results.rank NULLS LAST, image_findings.position""",
        {"case": case_id, "implant": implant_id},
    )


def crop_keys_of_case(conn: Connection, case_id: int) -> list[str]:
    """The crops of the case's X-rays and of references learned from them (to delete on erasure)."""
    return [row["crop_key"] for row in conn.execute(
        """SELECT crop_key FROM image_findings JOIN case_images ON case_images.id = image_findings.case_image_id
            WHERE case_images.case_id = %(case)s AND crop_key IS NOT NULL
           UNION SELECT crop_key FROM reference_images WHERE source_case_id = %(case)s AND crop_key IS NOT NULL""",
        {"case": case_id})]


class ImplantVector(Record):
    """One implant's stored vector, where it is (case, X-ray, position on it)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    case_id: int
    case_image_id: int
    position: int
    embedding: Vector


def implant_vectors(conn: Connection, case_ids: list[int], model_id: str) -> list[ImplantVector]:
    """The vectors of every implant on the cases' X-rays that `model_id` embedded."""
    return rows.many(
        conn, ImplantVector,
        """SELECT case_images.case_id, image_findings.case_image_id, image_findings.position, image_findings.embedding
             FROM image_findings
             JOIN case_images ON case_images.id = image_findings.case_image_id
                             AND case_images.model_id = image_findings.model_id
            WHERE case_images.case_id = ANY(%s) AND case_images.status = 'embedded' AND case_images.model_id = %s
            ORDER BY case_images.case_id, case_images.position, image_findings.position""",
        (case_ids, model_id),
    )


def cases_embedded_by_other_models(conn: Connection, case_ids: list[int], model_id: str) -> list[int]:
    """Those of the cases with an X-ray that another model than `model_id` embedded."""
    return [row["case_id"] for row in conn.execute(
        """SELECT DISTINCT case_id FROM case_images
            WHERE case_id = ANY(%s) AND status = 'embedded' AND model_id <> %s ORDER BY case_id""",
        (case_ids, model_id))]
