"""`raiox batch-test`: every image of a folder through direct matching or the real webhook, with a report."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from tqdm import tqdm

from raiox.adapters.imaging import ImageError
from raiox.embed.matching import match_image
from raiox.services import Services
from raiox.tools.simulator import jotform_fields, multipart, new_submission_id, serve_files, with_token

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm"}


@dataclass
class BatchItem:
    file: str
    label: str | None  # the parent folder's name when the folder is labelled (<system>/<film>)
    status: str  # matched | refused | accepted | duplicate | error
    seconds: float
    top3: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""


def images_in(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """Image files below `folder`, each with its label: the sub-folder name, or None at the top level."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield path, (path.parent.name if path.parent != folder else None)


def match_folder(services: Services, folder: Path, *, progress: bool = True) -> list[BatchItem]:
    """Direct mode: each image matched against the catalog; nothing is stored."""
    items = []
    for path, label in tqdm(list(images_in(folder)), desc="matching", unit="image", disable=not progress):
        started = time.monotonic()
        try:
            candidates = match_image(services, path.read_bytes())
        except ImageError as exc:
            items.append(BatchItem(str(path), label, "refused", time.monotonic() - started, detail=str(exc)))
            continue
        items.append(BatchItem(str(path), label, "matched", time.monotonic() - started,
                               [{"rank": c.rank, "manufacturer": c.manufacturer, "system": c.system,
                                 "similarity": round(c.similarity, 4)} for c in candidates[:3]]))
    return items


def send_folder(folder: Path, url: str, token: str | None, *, form_id: str = "251234567890123",
                progress: bool = True, wait: float = 120.0) -> list[BatchItem]:
    """Webhook mode: each image as one Jotform submission, its file served from a local upload host until
    intake has fetched every accepted one (or `wait` seconds passed)."""
    files = list(images_in(folder))
    paths = {f"/uploads/batch/{form_id}/{n}/{quote(path.name)}": path.read_bytes()
             for n, (path, _) in enumerate(files)}
    items = []
    accepted: list[str] = []
    with serve_files(paths) as base, requests.Session() as http:
        for (path, label), upload in tqdm(list(zip(files, paths, strict=True)), desc="sending", unit="image",
                                          disable=not progress):
            body, content_type = multipart(jotform_fields(form_id=form_id, submission_id=new_submission_id(),
                                                          upload_urls=[base + upload]))
            started = time.monotonic()
            try:
                answer = http.post(with_token(url, token), data=body, headers={"Content-Type": content_type},
                                   timeout=120)
            except requests.RequestException as exc:
                items.append(BatchItem(str(path), label, "error", time.monotonic() - started,
                                       detail=type(exc).__name__))
                continue
            document = answer.json() if answer.headers.get("Content-Type", "").startswith("application/json") else {}
            status = {202: "accepted", 200: "duplicate"}.get(answer.status_code, "refused")
            items.append(BatchItem(str(path), label, status, time.monotonic() - started,
                                   detail=f"HTTP {answer.status_code} {document.get('error') or ''}".strip()
                                   + (f" case {document['case_id']}" if "case_id" in document else "")))
            if status == "accepted":
                accepted.append(upload)
        try:
            base.wait_until_served(accepted, wait)
        except TimeoutError:
            log.warning("%d accepted film(s) were not fetched within %g s", len(set(accepted) - set(base.served)),
                        wait)
    return items


def summarise(items: list[BatchItem]) -> dict[str, Any]:
    """Counts per status and, for labelled images that were matched, top-1 and top-3 accuracy."""
    labelled = [i for i in items if i.label is not None and i.status == "matched"]
    summary: dict[str, Any] = {"images": len(items)}
    for item in items:
        summary[item.status] = summary.get(item.status, 0) + 1
    if labelled:
        summary["top1_accuracy"] = round(sum(i.top3[0]["system"] == i.label for i in labelled if i.top3)
                                         / len(labelled), 4)
        summary["top3_accuracy"] = round(sum(i.label in [c["system"] for c in i.top3] for i in labelled)
                                         / len(labelled), 4)
    return summary


def report(items: list[BatchItem]) -> dict[str, Any]:
    return {"summary": summarise(items), "items": [asdict(item) for item in items]}
