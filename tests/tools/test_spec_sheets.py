"""A catalog that starts without films: spec sheets read and checked, systems stored with their sheet and
rendered reference films, and real films taking over once there are two."""

from __future__ import annotations

from pathlib import Path

import pytest

from raiox.repository import catalog
from raiox.services import Services
from raiox.tools.catalog import ManifestError, ReferenceSystem, import_manifest, write_catalog
from raiox.tools.render import render
from raiox.tools.spec_sheets import SpecSheet, import_specs, read_specs, spec_films

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "specs.csv"


def test_the_example_sheet_reads_and_becomes_geometry() -> None:
    specs = [spec for _, spec in read_specs(EXAMPLE)]
    assert [s.system for s in specs] == ["Orbit Tapered TX", "Fjord Conical C", "Helix Classic EX"]
    design = specs[1].design()
    assert design.sizes == ((10.0, 11.5, 13.0), (3.5, 4.0, 4.5)) and design.apex_vent and design.taper > 0.15
    assert specs[2].design().connection == "external-hex" and specs[2].design().taper < 0.1


def test_a_bad_sheet_is_refused_with_its_line(tmp_path: Path) -> None:
    sheet = tmp_path / "specs.csv"
    sheet.write_text("manufacturer,system,thread_pitch_mm,diameters_mm,lengths_mm\nM,S,0.8,3.5|4.0,10\n"
                     "M,T,0.8,40,10\n")
    with pytest.raises(ManifestError, match="line 3: .*diameters_mm must lie between 2 and 8"):
        read_specs(sheet)
    sheet.write_text("manufacturer,system,pitch\nM,S,0.8\n")
    with pytest.raises(ManifestError, match="unknown columns pitch"):
        read_specs(sheet)


def test_rendered_films_are_reproducible_and_cover_the_sizes() -> None:
    spec = SpecSheet(manufacturer="M", system="S", thread_pitch_mm=0.8, diameters_mm=[3.5, 4.5], lengths_mm=[8, 12])
    assert spec_films(spec, 4) == spec_films(spec, 4)
    assert len(set(spec_films(spec, 4))) == 4


def test_spec_systems_are_stored_with_rendered_references_until_real_films_take_over(
        services: Services, tmp_path: Path) -> None:
    specs = [spec for _, spec in read_specs(EXAMPLE)]
    report = import_specs(services, specs[:2], films_per_system=3)
    assert (report.implants, report.references_added) == (2, 6)
    with services.db.transaction() as conn:
        rows = conn.execute("SELECT implants.system, implants.spec, reference_images.source FROM implants "
                            "JOIN reference_images ON reference_images.implant_id = implants.id").fetchall()
    assert {r["source"] for r in rows} == {"rendered"} and rows[0]["spec"]["thread_pitch_mm"] in (0.8, 1.2)
    design = specs[0].design()

    def real(count: int) -> None:
        films = [render(design, 900 + n + count * 10) for n in range(count)]
        import_manifest(services, write_catalog(tmp_path / f"real{count}", [
            ReferenceSystem(design.manufacturer, design.system, films)]), progress=False)

    def sources() -> list[str]:
        with services.db.transaction() as conn:
            return sorted(r["source"] for r in conn.execute(
                "SELECT source FROM reference_images JOIN implants ON implants.id = implant_id WHERE system = %s",
                (design.system,)))

    real(1)
    assert sources() == ["catalog", "rendered", "rendered", "rendered"]  # one real film does not take over yet
    real(2)
    assert sources() == ["catalog", "catalog", "catalog"]
    with services.db.transaction() as conn:
        assert catalog.implant_count(conn, services.encoder.model_id) == 2
