"""Matching: the top-k implant systems for an implant's vector, the low-confidence rule, direct matching of one
film (each implant on it, and the film's answer over all of them)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import BaseModel

from raiox.database import Connection
from raiox.repository import catalog
from raiox.services import Services
from raiox.settings import Settings

log = logging.getLogger(__name__)


class Candidate(BaseModel):
    """One proposed implant system: its similarity (its two best references' cosines blended,
    `catalog.SECOND_REFERENCE_WEIGHT`) and its best reference image."""

    rank: int
    implant_id: int
    manufacturer: str
    system: str
    similarity: float
    reference_image_id: int
    reference_storage_key: str


def find_candidates(
    conn: Connection, embedding: np.ndarray, model_id: str, *, k: int = 3, ef_search: int = 64
) -> list[Candidate]:
    """The k most similar implant systems (never two slots for one implant), compared only within model_id.

    The scan of model_id's own HNSW index returns `ef_search` nearest references (without that index, an
    exact scan does); when they cover fewer than k implants although the catalog has more (many references
    per implant), the same statement runs once more as an exact scan.
    """
    catalog.set_ef_search(conn, ef_search)
    rows = catalog.top_implants(conn, embedding, model_id, k=k, candidates=ef_search)
    if len(rows) < k and len(rows) < catalog.implant_count(conn, model_id):
        log.info("HNSW candidates covered %d implants; falling back to an exact scan", len(rows))
        conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
        rows = catalog.top_implants(conn, embedding, model_id, k=k, candidates=2**31 - 1)
        conn.execute("SELECT set_config('enable_indexscan', 'on', true)")
    return [
        Candidate(rank=rank, implant_id=row.implant_id, manufacturer=row.manufacturer, system=row.system,
                  similarity=row.similarity, reference_image_id=row.reference_image_id,
                  reference_storage_key=row.storage_key)
        for rank, row in enumerate(rows, start=1)
    ]


def is_low_confidence(similarities: list[float], settings: Settings) -> bool:
    """Whether a ranking (best first) deserves a careful look: a weak best match, or a runner-up too close."""
    if not similarities:
        return True
    margin = similarities[0] - similarities[1] if len(similarities) > 1 else 1.0
    return (similarities[0] < settings.raiox_low_confidence_similarity
            or margin < settings.raiox_low_confidence_margin)


class ImplantMatch(BaseModel):
    """One implant found on a film (or the whole film, when none stood out) and its candidates."""

    position: int
    found: bool
    summary: dict[str, Any]
    candidates: list[Candidate]


def match_implants(services: Services, data: bytes) -> list[ImplantMatch]:
    """Direct mode: every implant on one film with its top-k; nothing is stored. Raises ImageError."""
    identifier = services.encoder
    batch = identifier.identify([data])
    if 0 in batch.errors:
        raise batch.errors[0]
    k, ef_search = services.settings.raiox_top_k, services.settings.raiox_hnsw_ef_search
    with services.db.transaction() as conn:
        return [ImplantMatch(position=implant.position, found=implant.found, summary=implant.summary(),
                             candidates=find_candidates(conn, implant.embedding, identifier.model_id, k=k,
                                                        ef_search=ef_search))
                for implant in batch.films[0].implants]


def film_candidates(implants: list[ImplantMatch], k: int) -> list[Candidate]:
    """The film's answer over all its implants: each catalog system at its best similarity on any of them."""
    best: dict[int, Candidate] = {}
    for implant in implants:
        for candidate in implant.candidates:
            if candidate.implant_id not in best or candidate.similarity > best[candidate.implant_id].similarity:
                best[candidate.implant_id] = candidate
    ranked = sorted(best.values(), key=lambda c: (-c.similarity, c.implant_id))[:k]
    return [c.model_copy(update={"rank": rank}) for rank, c in enumerate(ranked, start=1)]


def match_image(services: Services, data: bytes) -> list[Candidate]:
    """Direct mode: one film in, its top-k systems over every implant on it out; nothing is stored. Raises
    ImageError for bad images."""
    return film_candidates(match_implants(services, data), services.settings.raiox_top_k)
