"""`raiox batch-test`: a folder through direct matching (with accuracy for labelled folders) or the webhook."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from raiox.tools.batch import match_folder, summarise
from raiox.tools.local import BASE_PATH
from raiox.tools.waiting import wait_until
from support import make_xray


def _folder(root: Path) -> Path:
    for seed in (11, 13):
        (root / f"S{seed}").mkdir(parents=True)
        (root / f"S{seed}" / "film.png").write_bytes(make_xray(seed))
    (root / "unlabelled.png").write_bytes(make_xray(12))
    (root / "notes.jpg").write_text("not an image")
    (root / "readme.txt").write_text("ignored: not an image suffix")
    return root


def test_direct_matching_reports_accuracy_for_labelled_films(catalogued: Any, tmp_path: Path) -> None:
    items = match_folder(catalogued, _folder(tmp_path / "films"), progress=False)
    by_name = {Path(item.file).name: item for item in items}
    assert set(by_name) == {"film.png", "unlabelled.png", "notes.jpg"}
    assert by_name["notes.jpg"].status == "refused" and "not a JPEG" in by_name["notes.jpg"].detail
    assert by_name["unlabelled.png"].label is None and by_name["unlabelled.png"].top3[0]["system"] == "S12"
    summary = summarise(items)
    assert summary == {"images": 4, "matched": 3, "refused": 1, "top1_accuracy": 1.0, "top3_accuracy": 1.0}
    with catalogued.db.transaction() as conn:
        assert conn.execute("SELECT count(*) AS n FROM cases").fetchone()["n"] == 0  # nothing stored


def test_webhook_mode_sends_every_film_as_a_submission(dev_server: tuple, tmp_path: Path) -> None:
    base, services = dev_server
    folder = _folder(tmp_path / "films")
    run = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "batch-test", str(folder), "--url",
                          f"{base}{BASE_PATH}/webhook", "--report", str(tmp_path / "report.json")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary == {"images": 4, "accepted": 4}  # the webhook records first; films are fetched after
    report = json.loads((tmp_path / "report.json").read_text())
    assert len({i["detail"] for i in report["items"]}) == 4  # one case each

    def settled() -> list[dict[str, Any]]:
        with services.db.transaction() as conn:
            rows = conn.execute("SELECT status, error FROM cases ORDER BY id").fetchall()
        return rows if all(r["status"] in ("ready", "failed") for r in rows) else []

    # The not-an-image film is fetched, refused and shown as a failed case, with why.
    statuses = wait_until(settled, 60, "every case to be ready or failed")
    assert sorted(r["status"] for r in statuses) == ["failed", "ready", "ready", "ready"]
    assert "not a JPEG, PNG, TIFF or DICOM" in next(r["error"] for r in statuses if r["status"] == "failed")
