"""The implant catalog from tools: importing a CSV or JSON Lines manifest of implant systems and their reference
images, re-embedding them under a new model, and writing a manifest for films made here (demo, benchmarks, tests)."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from raiox.adapters.imaging import DICOM, ImageError, inspect_image, sniff, storable
from raiox.adapters.storage import ObjectNotFound
from raiox.repository import catalog
from raiox.services import Services
from raiox.shape.identifier import reference_choices

log = logging.getLogger(__name__)

MAX_REFERENCE_BYTES = 50 * 1024 * 1024
SIZES = ("diameter", "length")  # optional ranges: <size>_min_mm and <size>_max_mm columns


class ManifestError(ValueError):
    """The manifest cannot be read, or one of its rows is invalid (the message names the line)."""


class ManifestRow(BaseModel):
    manufacturer: str = Field(min_length=1)
    system: str = Field(min_length=1)
    implant_type: str | None = Field(default=None, alias="type")
    connection: str | None = None
    notes: str | None = None
    # The diameters and lengths the system is sold in (mm), both ends of a range or neither.
    diameter_min_mm: float | None = Field(default=None, gt=0, le=100)
    diameter_max_mm: float | None = Field(default=None, gt=0, le=100)
    length_min_mm: float | None = Field(default=None, gt=0, le=100)
    length_max_mm: float | None = Field(default=None, gt=0, le=100)
    images: list[str] = Field(min_length=1)

    model_config = {"populate_by_name": True, "str_strip_whitespace": True}

    @field_validator("images", mode="before")
    @classmethod
    def _split_images(cls, value: object) -> object:
        if isinstance(value, str):  # CSV: several images separated by "|"
            return [part.strip() for part in value.split("|") if part.strip()]
        return value

    @field_validator("implant_type", "connection", "notes", "diameter_min_mm", "diameter_max_mm", "length_min_mm",
                     "length_max_mm", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _ranges(self) -> ManifestRow:
        for size in SIZES:
            low, high = getattr(self, f"{size}_min_mm"), getattr(self, f"{size}_max_mm")
            if (low is None) != (high is None):
                raise ValueError(f"{size}_min_mm and {size}_max_mm go together: give both or neither")
            if low is not None and high is not None and low > high:
                raise ValueError(f"{size}_min_mm ({low}) is larger than {size}_max_mm ({high})")
        return self

    def size_range(self, size: str) -> tuple[float, float] | None:
        low, high = getattr(self, f"{size}_min_mm"), getattr(self, f"{size}_max_mm")
        return (low, high) if low is not None and high is not None else None


def read_manifest(path: Path) -> list[tuple[int, ManifestRow]]:
    """Rows with their line numbers; `.csv` (header row, images separated by `|`) or `.jsonl`/`.ndjson`."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    records: Iterator[tuple[int, object]]
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        records = ((reader.line_num, dict(row)) for row in reader)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        records = _json_lines(text)
    else:
        raise ManifestError(f"{path.name}: a manifest is .csv or .jsonl")
    rows = []
    for line, record in records:
        try:
            rows.append((line, ManifestRow.model_validate(record)))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ManifestError(f"{path.name} line {line}: {problems}") from None
    return rows


def check_manifest(path: Path) -> int:
    """Read MANIFEST and check that each local image exists and is a film, without storing or embedding
    anything (cheap: run it before loading the encoder); returns the row count. URLs are fetched on import."""
    rows = read_manifest(path)
    for line, row in rows:
        for location in row.images:
            if location.startswith(("http://", "https://")):
                continue
            try:
                with (path.parent / location).open("rb") as file:
                    head = file.read(132)
            except OSError as exc:
                raise ManifestError(f"{path.name} line {line}: cannot read {location}: {exc.strerror}") from None
            try:
                sniff(head)
            except ImageError as exc:
                raise ManifestError(f"{path.name} line {line}: {location}: {exc}") from None
    if not rows:
        raise ManifestError(f"{path.name}: no rows (a header line, then one row per implant system)")
    return len(rows)


def _json_lines(text: str) -> Iterator[tuple[int, object]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"line {line}: not JSON ({exc.msg})") from None


def read_reference(location: str, base: Path) -> bytes:
    """A reference image from a path (relative to the manifest) or an http(s) URL the catalog owner gave."""
    if location.startswith(("http://", "https://")):
        try:
            with requests.get(location, timeout=(5, 30), stream=True) as response:
                response.raise_for_status()
                data: bytes = response.raw.read(MAX_REFERENCE_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise ManifestError(f"cannot download {location}: {exc}") from None
    else:
        try:
            data = (base / location).read_bytes()
        except OSError as exc:
            raise ManifestError(f"cannot read {location}: {exc.strerror}") from None
    if len(data) > MAX_REFERENCE_BYTES:
        raise ManifestError(f"{location} is larger than {MAX_REFERENCE_BYTES} bytes")
    return data


@dataclass
class ImportReport:
    implants: int = 0
    images: int = 0
    references_added: int = 0
    references_present: int = 0
    model_id: str = ""
    index: str = ""  # the model's HNSW index afterwards: ready, building, …


def import_manifest(services: Services, path: Path, *, progress: bool = True,
                    source: str = "catalog") -> ImportReport:
    """Store, embed and upsert every row. Importing the same manifest twice changes nothing the second time."""
    encoder = services.encoder
    rows = read_manifest(path)
    report = ImportReport(model_id=encoder.model_id)
    pending: list[tuple[int, str, str, bytes]] = []  # (implant_id, storage_key, sha256, bytes) to embed
    for line, row in tqdm(rows, desc="reading", unit="row", disable=not progress):
        with services.db.transaction() as conn:
            implant = catalog.upsert_implant(conn, row.manufacturer, row.system, implant_type=row.implant_type,
                                             connection=row.connection, notes=row.notes,
                                             diameter_mm=row.size_range("diameter"),
                                             length_mm=row.size_range("length"))
            present = catalog.existing_reference_shas(conn, implant.id, encoder.model_id)
        report.implants += 1
        for location in row.images:
            data = read_reference(location, path.parent)
            try:
                kind = sniff(data)
                if kind is DICOM:  # kept as PNG, which the admin page can show beside a case's film
                    limit = services.settings.raiox_max_image_pixels
                    data, kind = storable(data, inspect_image(data, max_pixels=limit))
            except ImageError as exc:
                raise ManifestError(f"{path.name} line {line}: {location}: {exc}") from None
            stored = services.store.put(data, namespace="references", extension=kind.extension)
            report.images += 1
            if stored.sha256 in present:
                report.references_present += 1
                continue
            present.add(stored.sha256)
            pending.append((implant.id, stored.key, stored.sha256, data))

    # All at once: which implant a film stands for depends on its system's other films.
    with tqdm(total=len(pending), desc="embedding", unit="image", disable=not progress) as bar:
        embedded = embed_references(services, [data for *_, data in pending],
                                    [implant_id for implant_id, *_ in pending], on_batch=bar.update)
    if embedded.errors:
        position, error = next(iter(embedded.errors.items()))
        raise ManifestError(f"reference image {pending[position][1]} does not decode: {error}")
    for start in range(0, len(pending), encoder.batch_size):
        with services.db.transaction() as conn:
            for position in range(start, min(start + encoder.batch_size, len(pending))):
                implant_id, key, sha, _ = pending[position]
                reference = embedded.references[position]
                _, created = catalog.add_reference_image(
                    conn, implant_id=implant_id, storage_key=key, sha256=sha, model_id=encoder.model_id,
                    embedding=reference.embedding, source=source, crop_key=reference.crop_key,
                    summary=reference.summary)
                report.references_added += created
                report.references_present += not created
    if report.references_added or report.references_present:
        report.index = index_model(services, encoder.model_id)
    log.info("imported %s: %s", path.name, report)
    return report


@dataclass(frozen=True)
class EmbeddedReference:
    embedding: np.ndarray
    crop_key: str
    summary: dict[str, Any]


@dataclass(frozen=True)
class EmbeddedReferences:
    references: dict[int, EmbeddedReference]
    errors: dict[int, ImageError]


def embed_references(services: Services, films: Sequence[bytes], systems: Sequence[int] | None = None,
                     on_batch: Callable[[int], object] | None = None) -> EmbeddedReferences:
    """Each reference film's implant that stands for its system: its vector, its canonical crop (stored, private)
    and its measurements, which the review page shows beside a case's implant. `systems` names each film's catalog
    implant (None: all are one new system's); a film stands for its first implant unless another agrees far
    better with the system's other films and stored references (`reference_choices`). `on_batch` hears how many
    films each encoder batch took."""
    encoder = services.encoder
    batch = encoder.identify_in_chunks(films, on_chunk=on_batch)
    identified = batch.films
    stored: dict[int, list[np.ndarray]] = {}
    if systems is None:
        systems = [0] * len(films)  # one new system: nothing stored to weigh
    elif identified:
        with services.db.transaction() as conn:
            stored = catalog.reference_vectors(conn, sorted({systems[p] for p in identified}), encoder.model_id)
    references = {}
    for position, implant in reference_choices(identified, systems, stored).items():
        crop = services.store.put(implant.crop_png(), namespace="crops", extension=".png")
        references[position] = EmbeddedReference(implant.embedding, crop.key, implant.summary())
    return EmbeddedReferences(references, batch.errors)


def index_model(services: Services, model_id: str) -> catalog.IndexState:
    """Give a model that got references its HNSW index (built concurrently; a lookup when it is ready)."""
    with services.db.autocommit() as conn:
        return catalog.ensure_model_index(conn, model_id, build_memory=services.settings.raiox_index_build_memory)


@dataclass
class ReembedReport:
    model_id: str
    added: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # storage key → why it was skipped (a later run retries)
    index: str = ""  # the model's HNSW index afterwards


def reembed_references(services: Services, *, progress: bool = True, readers: int = 8) -> ReembedReport:
    """Embed every stored reference image that has no row under the services' encoder's model id yet.

    Resumable: each batch commits on its own, and a run only lists what is still missing, so running it
    again continues where an interrupted run stopped. The old model's rows are never touched, so matching
    with it goes on meanwhile; references that arrive during the run are picked up by a last pass (and by
    any later run). When nothing is left, the new model's HNSW index is built (concurrently). Reference
    bytes are read from object storage on `readers` threads, one batch ahead of the encoder."""
    encoder = services.encoder
    report = ReembedReport(model_id=encoder.model_id)
    with services.db.transaction() as conn:
        total = catalog.count_references_missing_model(conn, encoder.model_id)
    skip: set[tuple[int, str]] = set()  # failed in this run: not retried by the next pass
    with (tqdm(total=total, desc="re-embedding", unit="image", disable=not progress) as bar,
          ThreadPoolExecutor(max_workers=readers, thread_name_prefix="raiox-reembed-read") as pool,
          ThreadPoolExecutor(max_workers=1, thread_name_prefix="raiox-reembed-page") as pager):
        while True:  # passes; a pass that adds nothing ends the run
            added_before = report.added
            pages = _missing_pages(services, encoder.model_id, encoder.batch_size, skip)
            ahead: Future[Any] = pager.submit(_read_page, services, pool, pages)
            while (page := ahead.result()) is not None:
                ahead = pager.submit(_read_page, services, pool, pages)
                rows, blobs = page
                _embed_page(services, rows, blobs, report, skip)
                bar.update(len(rows))
            if report.added == added_before:
                break
            bar.total = bar.n + _count_left(services, encoder.model_id, skip)
    with services.db.transaction() as conn:
        has_references = catalog.implant_count(conn, encoder.model_id) > 0
    report.index = index_model(services, encoder.model_id) if has_references else "missing"
    log.info("re-embedded %d reference images as %s (%d skipped); index %s", report.added, report.model_id,
             len(report.failed), report.index)
    return report


Page = list[catalog.StoredReference]  # references still to embed under a model, in (implant_id, sha256) order


def _missing_pages(services: Services, model_id: str, size: int,
                   skip: set[tuple[int, str]]) -> Iterator[Page]:
    after: tuple[int, str] | None = None
    while True:
        with services.db.transaction() as conn:
            rows = catalog.references_missing_model(conn, model_id, after=after, limit=size)
        if not rows:
            return
        after = (rows[-1].implant_id, rows[-1].sha256)
        rows = [row for row in rows if (row.implant_id, row.sha256) not in skip]
        if rows:
            yield rows


def _read_page(services: Services, pool: ThreadPoolExecutor,
               pages: Iterator[Page]) -> tuple[Page, list[bytes | None]] | None:
    rows = next(pages, None)
    if rows is None:
        return None

    def read(key: str) -> bytes | None:
        try:
            return services.store.get(key)
        except ObjectNotFound:
            return None

    return rows, list(pool.map(read, [row.storage_key for row in rows]))


def _embed_page(services: Services, rows: Page, blobs: list[bytes | None], report: ReembedReport,
                skip: set[tuple[int, str]]) -> None:
    encoder = services.encoder
    readable = {position: blob for position, blob in enumerate(blobs) if blob is not None}
    numbers = {position: number for number, position in enumerate(readable)}  # row → encoder input
    embedded = embed_references(services, list(readable.values()), [rows[position].implant_id for position in readable])
    with services.db.transaction() as conn:
        for position, row in enumerate(rows):
            key = (row.implant_id, row.sha256)
            if blobs[position] is None:
                report.failed[row.storage_key] = "not in object storage"
                skip.add(key)
                continue
            number = numbers[position]
            if number in embedded.errors:
                report.failed[row.storage_key] = str(embedded.errors[number])
                skip.add(key)
                continue
            reference = embedded.references[number]
            report.added += catalog.add_reference_image(
                conn, implant_id=row.implant_id, storage_key=row.storage_key, sha256=row.sha256,
                model_id=encoder.model_id, embedding=reference.embedding, source=row.source,
                source_case_id=row.source_case_id, crop_key=reference.crop_key, summary=reference.summary)[1]


def _count_left(services: Services, model_id: str, skip: set[tuple[int, str]]) -> int:
    with services.db.transaction() as conn:
        return max(0, catalog.count_references_missing_model(conn, model_id) - len(skip))


def reembed_catalog(services: Services, *, progress: bool = True) -> int:
    """reembed_references, answering the rows added (after `raiox train --reembed`)."""
    return reembed_references(services, progress=progress).added


@dataclass(frozen=True)
class ReferenceSystem:
    """One implant system of a catalog made here, with its reference films (bytes)."""

    manufacturer: str
    system: str
    films: list[bytes]
    columns: dict[str, str | float] = field(default_factory=dict)  # type, connection, notes, size ranges


def write_catalog(folder: Path, systems: Sequence[ReferenceSystem]) -> Path:
    """Each system's films as files in `folder` and a JSON Lines manifest naming them; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for number, entry in enumerate(systems):
        names = []
        for view, film in enumerate(entry.films):
            name = f"{number:04d}-{view}{sniff(film).extension}"
            (folder / name).write_bytes(film)
            names.append(name)
        lines.append(json.dumps({"manufacturer": entry.manufacturer, "system": entry.system, **entry.columns,
                                 "images": names}))
    manifest = folder / "catalog.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
