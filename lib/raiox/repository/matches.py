"""SQL of the candidates ranked for each implant found on an X-ray (`match_results`, one ranking per implant of an
X-ray and model): writing a ranking, and reading it back for the review page, decisions and delivery."""

from __future__ import annotations

from typing import Any

from raiox.database import Connection
from raiox.models import Record
from raiox.repository import rows
from raiox.repository.catalog import SIZE_COLUMNS, ImplantSizes


class RankedMatch(Record):
    """One candidate of an implant's ranking as embed writes it."""

    rank: int
    implant_id: int
    reference_image_id: int | None
    similarity: float


class MatchResult(Record):
    """One candidate of one implant of an X-ray, under any model that ranked it."""

    case_image_id: int
    position: int  # the X-ray's
    finding_position: int  # the implant's on it
    rank: int
    similarity: float
    model_id: str
    implant_id: int
    manufacturer: str
    system: str
    reference_image_id: int | None


class CaseCandidate(ImplantSizes):
    """One candidate of an implant of an X-ray under the model that embedded the X-ray, with its best reference
    (film and crop keys, measurements, where it came from) and the implant's size ranges."""

    case_image_id: int
    finding_position: int
    rank: int
    similarity: float
    implant_id: int
    manufacturer: str
    system: str
    reference_image_id: int | None
    reference_storage_key: str | None
    reference_crop_key: str | None
    reference_summary: dict[str, Any] | None
    reference_source: str | None
    reference_case_id: int | None


def replace_matches(conn: Connection, image_id: int, model_id: str, ranked: dict[int, list[RankedMatch]]) -> None:
    """Each implant's (finding position → candidates) top-k under this model, replacing earlier ones."""
    conn.execute("DELETE FROM match_results WHERE case_image_id = %s AND model_id = %s", (image_id, model_id))
    with conn.cursor() as cursor:
        cursor.executemany(
            """INSERT INTO match_results (case_image_id, model_id, finding_position, rank, implant_id,
                                          reference_image_id, similarity)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            [(image_id, model_id, position, r.rank, r.implant_id, r.reference_image_id, r.similarity)
             for position, results in ranked.items() for r in results],
        )


def match_results_of_case(conn: Connection, case_id: int) -> list[MatchResult]:
    return rows.many(
        conn, MatchResult,
        """SELECT case_images.id AS case_image_id, case_images.position, match_results.finding_position,
                  match_results.rank,
                  match_results.similarity, match_results.model_id, implants.id AS implant_id,
                  implants.manufacturer, implants.system, match_results.reference_image_id
             FROM match_results
             JOIN case_images ON case_images.id = match_results.case_image_id
             JOIN implants ON implants.id = match_results.implant_id
            WHERE case_images.case_id = %s
            ORDER BY case_images.position, match_results.model_id, match_results.rank""",
        (case_id,),
    )


def candidates(conn: Connection, case_id: int) -> list[CaseCandidate]:
    """Each image's ranked candidates per implant found on it, under the model that embedded it, with the best
    reference's film and crop keys, its measurements, where it came from (a film learned from another case
    names that case) and the implant's size ranges."""
    return rows.many(
        conn, CaseCandidate,
        f"""
        SELECT case_images.id AS case_image_id, match_results.finding_position, match_results.rank,
               match_results.similarity,
               implants.id AS implant_id, implants.manufacturer, implants.system, {SIZE_COLUMNS},
               match_results.reference_image_id, reference_images.storage_key AS reference_storage_key,
               reference_images.crop_key AS reference_crop_key, reference_images.summary AS reference_summary,
               reference_images.source AS reference_source, reference_images.source_case_id AS reference_case_id
          FROM case_images
          JOIN match_results ON match_results.case_image_id = case_images.id
                            AND match_results.model_id = case_images.model_id
          JOIN implants ON implants.id = match_results.implant_id
          LEFT JOIN reference_images ON reference_images.id = match_results.reference_image_id
         WHERE case_images.case_id = %s
         ORDER BY case_images.position, match_results.finding_position, match_results.rank
        """,
        (case_id,),
    )


def candidate_at_rank(conn: Connection, case_id: int, rank: int, image_id: int | None,
                      implant: int = 0) -> int | None:
    """The id of the catalog implant at `rank` for the given image of the case (or its first embedded image),
    ranked for the implant found at position `implant` on it (0: the most implant-like)."""
    row = conn.execute(
        """
        SELECT match_results.implant_id
          FROM case_images
          JOIN match_results ON match_results.case_image_id = case_images.id
                            AND match_results.model_id = case_images.model_id
         WHERE case_images.case_id = %(case)s AND match_results.rank = %(rank)s
           AND match_results.finding_position = %(implant)s
           AND (%(image)s::bigint IS NULL OR case_images.id = %(image)s)
         ORDER BY case_images.position
         LIMIT 1
        """,
        {"case": case_id, "rank": rank, "image": image_id, "implant": implant},
    ).fetchone()
    return int(row["implant_id"]) if row else None
