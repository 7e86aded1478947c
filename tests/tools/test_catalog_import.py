"""Catalog import from CSV and JSON Lines: stored, embedded, idempotent, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raiox.adapters.encoder import Encoder
from raiox.repository import catalog
from raiox.services import Services
from raiox.tools.catalog import ManifestError, import_manifest, read_manifest
from support import make_xray


def _write_images(folder: Path, seeds: list[int]) -> list[str]:
    folder.mkdir(exist_ok=True)
    names = []
    for seed in seeds:
        (folder / f"ref{seed}.png").write_bytes(make_xray(seed))
        names.append(f"refs/ref{seed}.png")
    return names


def _counts(services: Services) -> tuple[int, int]:
    with services.db.transaction() as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM implants) AS i, "
                           "(SELECT count(*) FROM reference_images) AS r").fetchone()
    return row["i"], row["r"]


def test_csv_import_is_idempotent(services: Services, tiny_encoder: Encoder, tmp_path: Path) -> None:
    a = _write_images(tmp_path / "refs", [1, 2, 3])
    b = _write_images(tmp_path / "refs", [4])
    manifest = tmp_path / "catalog.csv"
    manifest.write_text(
        "manufacturer,system,type,connection,notes,images\n"
        f"Acme,Tapered Pro,bone level,conical,,{'|'.join(a)}\n"
        f"Zenith,Straight,tissue level,,short,{b[0]}\n"
    )
    first = import_manifest(services, manifest, progress=False)
    assert (first.implants, first.images, first.references_added, first.references_present) == (2, 4, 4, 0)
    assert first.index == "ready"  # the model's own HNSW index
    with services.db.transaction() as conn:
        assert catalog.model_index_state(conn, tiny_encoder.model_id) == "ready"
    assert _counts(services) == (2, 4)
    second = import_manifest(services, manifest, progress=False)
    assert (second.references_added, second.references_present) == (0, 4)
    assert _counts(services) == (2, 4)
    with services.db.transaction() as conn:
        summary = {row.system: row for row in catalog.catalog_summary(conn)}
    assert summary["Tapered Pro"].references == 3
    assert summary["Tapered Pro"].model_id == tiny_encoder.model_id
    assert summary["Tapered Pro"].connection == "conical"
    key = services.store.put(make_xray(1), namespace="references", extension=".png")
    assert not key.created  # the reference bytes are in object storage, once


def test_jsonl_import_and_matching_an_identical_image(services: Services, tiny_encoder: Encoder,
                                                      tmp_path: Path) -> None:
    rows = [{"manufacturer": "Maker", "system": f"S{seed}", "images": _write_images(tmp_path / "refs", [seed])}
            for seed in range(10, 15)]
    manifest = tmp_path / "catalog.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    import_manifest(services, manifest, progress=False)
    from raiox.embed.matching import match_image

    candidates = match_image(services, make_xray(12))
    assert candidates[0].system == "S12"
    assert candidates[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert len(candidates) == 3


def _sizes(services: Services) -> dict[str, tuple]:
    with services.db.transaction() as conn:
        return {row["system"]: (row["diameter_min_mm"], row["diameter_max_mm"], row["length_min_mm"],
                                row["length_max_mm"])
                for row in conn.execute("SELECT * FROM implants")}


def test_size_ranges_are_optional_columns(services: Services, tiny_encoder: Encoder, tmp_path: Path) -> None:
    a, b = _write_images(tmp_path / "refs", [1, 2])
    manifest = tmp_path / "catalog.csv"
    manifest.write_text(
        "manufacturer,system,diameter_min_mm,diameter_max_mm,length_min_mm,length_max_mm,images\n"
        f"Acme,Tapered Pro,3.5,5.0,8,13,{a}\n"
        f"Zenith,Straight,,,6.5,6.5,{b}\n"
    )
    import_manifest(services, manifest, progress=False)
    assert _sizes(services) == {"Tapered Pro": (3.5, 5.0, 8.0, 13.0), "Straight": (None, None, 6.5, 6.5)}
    # A manifest without the columns (an older one) leaves the ranges; a new range replaces the old.
    manifest.write_text(f"manufacturer,system,images\nAcme,Tapered Pro,{a}\n")
    import_manifest(services, manifest, progress=False)
    rows = [{"manufacturer": "Zenith", "system": "Straight", "diameter_min_mm": 4.1, "diameter_max_mm": 4.8,
             "images": [b]}]
    (tmp_path / "catalog.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    import_manifest(services, tmp_path / "catalog.jsonl", progress=False)
    assert _sizes(services) == {"Tapered Pro": (3.5, 5.0, 8.0, 13.0), "Straight": (4.1, 4.8, 6.5, 6.5)}


def test_the_database_refuses_a_range_upside_down(services: Services) -> None:
    import psycopg

    for diameter, length in [((5.0, 4.0), None), (None, (0.0, 10.0))]:
        with pytest.raises(psycopg.errors.CheckViolation), services.db.transaction() as conn:
            catalog.upsert_implant(conn, "Acme", "Wrong", diameter_mm=diameter, length_mm=length)
    with pytest.raises(psycopg.errors.CheckViolation), services.db.transaction() as conn:
        conn.execute("INSERT INTO implants (manufacturer, system, length_min_mm) VALUES ('Acme', 'Half', 8)")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.csv", "manufacturer,system,length_min_mm,images\nAcme,S1,8,x.png\n",
         "line 2: .*length_min_mm and length_max_mm go together"),
        ("c.csv", "manufacturer,system,diameter_min_mm,diameter_max_mm,images\nAcme,S1,5,4.1,x.png\n",
         "line 2: .*diameter_min_mm \\(5.0\\) is larger than diameter_max_mm \\(4.1\\)"),
        ("c.csv", "manufacturer,system,length_min_mm,length_max_mm,images\nAcme,S1,-1,10,x.png\n",
         "line 2: length_min_mm: Input should be greater than 0"),
        ("c.csv", "manufacturer,system,length_min_mm,length_max_mm,images\nAcme,S1,ten,12,x.png\n",
         "line 2: length_min_mm: Input should be a valid number"),
        ("c.csv", "manufacturer,system,images\nAcme,,x.png\n", "line 2: system"),
        ("c.csv", "manufacturer,system,images\nAcme,S1,\n", "line 2: images"),
        ("c.jsonl", '{"manufacturer": "A", "system": "B", "images": ["x.png"]}\nnot json\n', "line 2: not JSON"),
        ("c.txt", "", "a manifest is .csv or .jsonl"),
    ],
)
def test_bad_manifests_name_the_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / name)


def test_missing_and_non_image_files_stop_the_import(services: Services, tiny_encoder: Encoder,
                                                     tmp_path: Path) -> None:
    manifest = tmp_path / "c.csv"
    manifest.write_text("manufacturer,system,images\nAcme,S1,missing.png\n")
    with pytest.raises(ManifestError, match="cannot read missing.png"):
        import_manifest(services, manifest, progress=False)
    (tmp_path / "notes.png").write_text("this is text")
    manifest.write_text("manufacturer,system,images\nAcme,S1,notes.png\n")
    with pytest.raises(ManifestError, match="not a JPEG, PNG, TIFF or DICOM"):
        import_manifest(services, manifest, progress=False)
    assert _counts(services)[1] == 0


def test_a_dicom_reference_is_stored_as_png(services: Services, tiny_encoder: Encoder, tmp_path: Path) -> None:
    """Reference films may come as DICOM; they are kept as the windowed PNG the admin page shows beside a case."""
    from support import make_dicom

    (tmp_path / "ref.dcm").write_bytes(make_dicom(PixelSpacing=[0.05, 0.05]))
    manifest = tmp_path / "c.csv"
    manifest.write_text("manufacturer,system,images\nAcme,S1,ref.dcm\n")
    report = import_manifest(services, manifest, progress=False)
    assert report.images == 1
    with services.db.transaction() as conn:
        [key] = [row["storage_key"] for row in conn.execute("SELECT storage_key FROM reference_images")]
    assert key.endswith(".png") and services.store.get(key).startswith(b"\x89PNG")


def test_a_systems_films_choose_their_implants_together_and_beside_its_stored_references(
        services: Services, tiny_encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Which implant of a reference film stands for its system depends on the system's other films: all of one
    # import's films of a system are weighed together, and with the references already stored.
    from raiox.shape import identifier

    weighed: list[tuple[int, int]] = []  # (films, stored references) per system
    choose = identifier.reference_implants
    monkeypatch.setattr(identifier, "reference_implants",
                        lambda films, stored=(): weighed.append((len(films), len(stored))) or choose(films, stored))
    a, b = _write_images(tmp_path / "refs", [1, 2, 3]), _write_images(tmp_path / "refs", [4])
    manifest = tmp_path / "catalog.csv"
    manifest.write_text(f"manufacturer,system,images\nAcme,Tapered Pro,{'|'.join(a)}\nZenith,Straight,{b[0]}\n")
    import_manifest(services, manifest, progress=False)
    assert sorted(weighed) == [(1, 0), (3, 0)]
    weighed.clear()
    more = tmp_path / "more.csv"
    more.write_text(f"manufacturer,system,images\nAcme,Tapered Pro,{_write_images(tmp_path / 'refs', [5])[0]}\n")
    import_manifest(services, more, progress=False)
    assert weighed == [(1, 3)]
