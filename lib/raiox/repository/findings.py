"""SQL of the implants found on each X-ray (`image_findings`) and the candidates ranked for each of them
(`match_results`, one ranking per implant of an X-ray and model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from raiox.database import Connection


@dataclass(frozen=True)
class FindingRow:
    """One implant of an X-ray as the embed step writes it."""

    position: int
    found: bool
    crop_key: str | None
    summary: dict[str, Any]
    embedding: np.ndarray


def replace_findings(conn: Connection, image_id: int, model_id: str, findings: list[FindingRow]) -> None:
    """The X-ray's implants under this model, replacing earlier ones (a re-run leaves one set)."""
    conn.execute("DELETE FROM image_findings WHERE case_image_id = %s AND model_id = %s", (image_id, model_id))
    with conn.cursor() as cursor:
        cursor.executemany(
            """INSERT INTO image_findings (case_image_id, model_id, position, found, crop_key, summary, embedding)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            [(image_id, model_id, f.position, f.found, f.crop_key, Jsonb(f.summary), f.embedding) for f in findings],
        )


def replace_matches(conn: Connection, image_id: int, model_id: str,
                    ranked: dict[int, list[dict[str, Any]]]) -> None:
    """Each implant's (finding position → candidates) top-k under this model, replacing earlier ones."""
    conn.execute("DELETE FROM match_results WHERE case_image_id = %s AND model_id = %s", (image_id, model_id))
    with conn.cursor() as cursor:
        cursor.executemany(
            """INSERT INTO match_results (case_image_id, model_id, finding_position, rank, implant_id,
                                          reference_image_id, similarity)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            [(image_id, model_id, position, r["rank"], r["implant_id"], r["reference_image_id"], r["similarity"])
             for position, results in ranked.items() for r in results],
        )


def findings_of_case(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    """The implants of the case's X-rays under the model that embedded each X-ray, in order."""
    return conn.execute(
        """SELECT image_findings.case_image_id, image_findings.position, image_findings.found,
                  image_findings.crop_key, image_findings.summary
             FROM image_findings
             JOIN case_images ON case_images.id = image_findings.case_image_id
                             AND case_images.model_id = image_findings.model_id
            WHERE case_images.case_id = %s
            ORDER BY case_images.position, image_findings.position""",
        (case_id,),
    ).fetchall()


def learnable_findings(conn: Connection, case_id: int, implant_id: int) -> list[dict[str, Any]]:
    """Per embedded X-ray of the case, the implant to learn `implant_id` from: the one that ranked it best, else
    the most implant-like; with what a reference needs (film key, sha256, model id, vector, crop, summary)."""
    return conn.execute(
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
    ).fetchall()


def crop_keys_of_case(conn: Connection, case_id: int) -> list[str]:
    """The crops of the case's X-rays and of references learned from them (to delete on erasure)."""
    return [row["crop_key"] for row in conn.execute(
        """SELECT crop_key FROM image_findings JOIN case_images ON case_images.id = image_findings.case_image_id
            WHERE case_images.case_id = %(case)s AND crop_key IS NOT NULL
           UNION SELECT crop_key FROM reference_images WHERE source_case_id = %(case)s AND crop_key IS NOT NULL""",
        {"case": case_id})]
