"""Helpers the tests share: synthetic radiographs, a case as intake leaves it, a case's state, function entries."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CATALOG_SEEDS = [10, 11, 12, 13, 14]
_module_numbers = itertools.count(1)


def make_xray(seed: int, size: tuple[int, int] = (160, 200), fmt: str = "PNG", mode: str = "L") -> bytes:
    """A small synthetic radiograph: noisy dark film with a bright threaded post placed by `seed`."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    film = rng.normal(60, 12, size=(height, width))
    left = int(rng.integers(width // 6, width // 2))
    post_width = int(rng.integers(width // 8, width // 4))
    top, bottom = int(height * 0.2), int(height * rng.uniform(0.6, 0.9))
    film[top:bottom, left:left + post_width] = 230
    pitch = int(rng.integers(4, 12))
    for y in range(top, bottom, pitch):
        film[y:y + pitch // 2, left - 3:left + post_width + 3] = 200
    pixels = np.clip(film, 0, 255)
    if mode == "I;16":
        image = Image.fromarray((pixels * 64).astype(np.uint16))
    else:
        image = Image.fromarray(pixels.astype(np.uint8), mode="L").convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def dicom_pixels(rows: int = 60, columns: int = 40):  # type: ignore[no-untyped-def]
    """12-bit values: a dark background (100) with a bright implant-like post (4000) in the middle."""
    import numpy as np

    pixels = np.full((rows, columns), 100, dtype=np.uint16)
    pixels[rows // 6:rows * 5 // 6, columns * 3 // 8:columns * 5 // 8] = 4000
    return pixels


def make_dicom(pixels=None, *, photometric: str = "MONOCHROME2", syntax=None,  # type: ignore[no-untyped-def]
               frames: int = 1, **elements) -> bytes:
    """A DICOM Part 10 file (16 bits allocated, 12 stored) as a clinic's sensor software exports one; `elements`
    are header attributes (PixelSpacing, WindowCenter, …). A compressed `syntax` gets a fake encapsulated frame."""
    import io

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = dicom_pixels() if pixels is None else pixels
    syntax = syntax or ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "IO"  # intra-oral radiography
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for name, value in elements.items():
        setattr(ds, name, value)
    if syntax.is_compressed:
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(64)])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.ascontiguousarray(np.broadcast_to(pixels, (frames, *pixels.shape))).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def submit_case(services, submission_id: str, films: list[bytes]) -> int:  # type: ignore[no-untyped-def]
    """What intake leaves behind: stored X-rays, the case, its images and an embed job."""
    from raiox.models import JobKind
    from raiox.repository import cases, images, jobs

    stored = [services.store.put(data, namespace="xrays", extension=".png") for data in films]
    with services.db.transaction() as conn:
        case, _ = cases.create_case(conn, submission_id=submission_id)
        for position, obj in enumerate(stored):
            images.add_case_image(conn, case_id=case.id, position=position, storage_key=obj.key,
                                  sha256=obj.sha256, size_bytes=obj.size, content_type=obj.content_type)
        jobs.enqueue(conn, JobKind.EMBED, case_id=case.id, max_attempts=services.settings.embed_max_attempts)
    return case.id


def case_state(services, case_id: int) -> dict:  # type: ignore[no-untyped-def]
    from raiox.repository import cases, matches

    with services.db.transaction() as conn:
        case = cases.get_case(conn, case_id)
        results = matches.match_results_of_case(conn, case_id)
        job = conn.execute("SELECT * FROM jobs WHERE case_id = %s AND kind = 'embed' ORDER BY id DESC LIMIT 1",
                           (case_id,)).fetchone()
        images = conn.execute("SELECT status, error FROM case_images WHERE case_id = %s ORDER BY position",
                              (case_id,)).fetchall()
        audit = [r["action"] for r in conn.execute("SELECT action FROM audit_log WHERE case_id = %s ORDER BY id",
                                                   (case_id,))]
    return {"case": case, "results": results, "job": job, "images": images, "audit": audit}


def load_function_main(function: str):  # type: ignore[no-untyped-def]
    """functions/<function>/__main__.py loaded under a unique module name; returns its `main`."""
    spec = importlib.util.spec_from_file_location(f"{function}_do_main_{next(_module_numbers)}",
                                                  REPO / "functions" / function / "__main__.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
