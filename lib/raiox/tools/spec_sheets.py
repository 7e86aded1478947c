"""A catalog that starts without films: implant systems from their manufacturers' spec sheets (body, thread,
pitch, apex, collar, connection, diameters and lengths), stored with their attributes, and reference films
rendered from that geometry at the sizes the system is sold in (source `rendered`). Real films added later
(a catalog import, approved cases) take over: once an implant has two of them, its rendered references go."""

from __future__ import annotations

import csv
import io
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raiox.repository import catalog
from raiox.services import Services
from raiox.tools.catalog import ManifestError, embed_references, index_model
from raiox.tools.implant_designs import ImplantDesign, SceneOptions

log = logging.getLogger(__name__)

SPEC_COLUMNS = ("manufacturer", "system", "body", "taper", "thread_profile", "thread_pitch_mm", "thread_depth_mm",
                "thread_leads", "collar_mm", "microthreads", "apex", "apex_vent", "apex_grooves", "connection",
                "diameters_mm", "lengths_mm")
# Reference films a spec sheet gets: plain periapicals, lower jaw, a cover screw or nothing on the implant.
REFERENCE_SCENE = SceneOptions(upper_jaw=False, neighbours=0, photographed=False, quarter_turns=0, mirrored=False,
                               bits=8, jpeg_quality=0)


class SpecSheet(BaseModel):
    """One system as its manufacturer describes it (millimetres)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    manufacturer: str = Field(min_length=1, max_length=200)
    system: str = Field(min_length=1, max_length=200)
    body: Literal["parallel", "tapered", "hybrid"] = "parallel"
    taper: float | None = Field(default=None, ge=0, le=0.6, description="apex core ÷ platform core, 1 − that")
    thread_profile: Literal["v", "square", "buttress", "reverse-buttress"] = "v"
    thread_pitch_mm: float = Field(gt=0.2, le=2.5)
    thread_depth_mm: float | None = Field(default=None, gt=0.05, le=1.0)
    thread_leads: int = Field(default=1, ge=1, le=3)
    collar_mm: float = Field(default=1.0, ge=0, le=5)
    microthreads: bool = False
    apex: Literal["flat", "round", "pointed"] = "round"
    apex_vent: bool = False
    apex_grooves: bool = False
    connection: Literal["internal-hex", "conical", "external-hex", "tri-channel"] = "internal-hex"
    diameters_mm: list[float] = Field(min_length=1, max_length=12)
    lengths_mm: list[float] = Field(min_length=1, max_length=20)

    @field_validator("diameters_mm", "lengths_mm", mode="before")
    @classmethod
    def _listed(cls, value: object) -> object:
        if isinstance(value, str):  # CSV: "3.5|4.3|5.0"
            return [part.strip() for part in value.replace(";", "|").replace(",", "|").split("|") if part.strip()]
        return value

    @field_validator("taper", "thread_depth_mm", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("microthreads", "apex_vent", "apex_grooves", mode="before")
    @classmethod
    def _yes_no(cls, value: object) -> object:
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("yes", "y", "true", "1"):
                return True
            if word in ("no", "n", "false", "0", ""):
                return False
        return value

    @model_validator(mode="after")
    def _sizes(self) -> SpecSheet:
        if not all(2.0 <= d <= 8.0 for d in self.diameters_mm):
            raise ValueError("diameters_mm must lie between 2 and 8 mm")
        if not all(4.0 <= length <= 25.0 for length in self.lengths_mm):
            raise ValueError("lengths_mm must lie between 4 and 25 mm")
        if self.thread_depth_mm is not None and self.thread_depth_mm >= min(self.diameters_mm) / 3:
            raise ValueError("thread_depth_mm must be under a third of the narrowest diameter")
        return self

    def design(self) -> ImplantDesign:
        """The geometry the film generator draws: an unstated taper or thread depth gets a typical value."""
        taper = self.taper if self.taper is not None else {"parallel": 0.03, "tapered": 0.35, "hybrid": 0.25}[self.body]
        depth = self.thread_depth_mm if self.thread_depth_mm is not None else min(0.4, 0.09 * min(self.diameters_mm))
        diameters, lengths = sorted(self.diameters_mm), sorted(self.lengths_mm)
        return ImplantDesign(
            manufacturer=self.manufacturer, system=self.system, length_mm=lengths[len(lengths) // 2],
            diameter_mm=diameters[len(diameters) // 2], taper=taper, thread_pitch_mm=self.thread_pitch_mm,
            thread_depth_mm=depth, thread_profile=self.thread_profile, collar_mm=self.collar_mm,
            microthreads=self.microthreads, apex=self.apex, apex_vent=self.apex_vent, connection=self.connection,
            taper_start={"parallel": 0.3, "tapered": 0.1, "hybrid": 0.5}[self.body], thread_leads=self.thread_leads,
            apex_grooves=self.apex_grooves, lengths_mm=tuple(lengths), diameters_mm=tuple(diameters))


def read_specs(path: Path) -> list[tuple[int, SpecSheet]]:
    """A spec-sheet CSV (header row: SPEC_COLUMNS, any order, only manufacturer, system, thread_pitch_mm,
    diameters_mm and lengths_mm required) or JSON Lines; ManifestError names the line of a bad row."""
    text = path.read_text(encoding="utf-8-sig")
    rows: list[tuple[int, object]]
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        unknown = set(reader.fieldnames or []) - set(SPEC_COLUMNS)
        if unknown:
            raise ManifestError(f"{path.name}: unknown columns {', '.join(sorted(unknown))}; the columns are "
                                f"{', '.join(SPEC_COLUMNS)}")
        rows = [(number, {k: v for k, v in row.items() if v is not None}) for number, row in enumerate(reader, 2)]
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as exc:
                    raise ManifestError(f"{path.name} line {number}: not JSON ({exc})") from None
    else:
        raise ManifestError(f"{path.name}: a spec-sheet file is .csv or .jsonl")
    specs = []
    for number, row in rows:
        try:
            specs.append((number, SpecSheet.model_validate(row)))
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
            raise ManifestError(f"{path.name} line {number}: {problem}") from None
    if not specs:
        raise ManifestError(f"{path.name} holds no spec sheet")
    return specs


def spec_films(spec: SpecSheet, count: int) -> list[bytes]:
    """`count` reference films of the system, drawn by the film generator at each of its sizes in turn."""
    from raiox.tools.render import render

    design = spec.design()
    sizes = [design.only_at(length, diameter) for length in design.sizes[0] for diameter in design.sizes[1]]
    seed = zlib.crc32(f"{spec.manufacturer}\n{spec.system}".encode())
    return [render(sizes[(n * 7) % len(sizes)], seed + n, REFERENCE_SCENE) for n in range(count)]


@dataclass
class SpecReport:
    model_id: str
    implants: int = 0
    references_added: int = 0
    index: str = ""


def import_specs(services: Services, specs: list[SpecSheet], *, films_per_system: int = 6) -> SpecReport:
    """Each spec sheet as a catalog implant (its attributes kept) with rendered reference films."""
    report = SpecReport(model_id=services.encoder.model_id)
    for spec in specs:
        films = spec_films(spec, films_per_system)
        embedded = embed_references(services, films)
        if embedded.errors:
            error = next(iter(embedded.errors.values()))
            raise ManifestError(f"{spec.system}: a rendered film does not decode: {error}")
        lengths, diameters = spec.design().sizes
        with services.db.transaction() as conn:
            implant = catalog.upsert_implant(
                conn, spec.manufacturer, spec.system, implant_type="tapered" if spec.body != "parallel"
                else "parallel-walled", connection=spec.connection, notes="rendered from its spec sheet",
                diameter_mm=(min(diameters), max(diameters)), length_mm=(min(lengths), max(lengths)))
            catalog.set_spec(conn, implant.id, spec.model_dump())
            for position, film in enumerate(films):
                stored = services.store.put(film, namespace="references", extension=".png")
                reference = embedded.references[position]
                _, created = catalog.add_reference_image(
                    conn, implant_id=implant.id, storage_key=stored.key, sha256=stored.sha256,
                    model_id=report.model_id, embedding=reference.embedding, source="rendered",
                    crop_key=reference.crop_key, summary=reference.summary)
                report.references_added += created
        report.implants += 1
    if report.implants:
        report.index = index_model(services, report.model_id)
    log.info("spec sheets: %s", report)
    return report
