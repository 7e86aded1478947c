"""The one-port dev server: a simulated Jotform webhook goes through intake, the poke and embed to `ready`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from raiox.tools.local import BASE_PATH
from raiox.tools.waiting import wait_until
from support import case_state, make_xray


def test_simulated_webhook_becomes_ready(dev_server: tuple, catalogued: Any, tmp_path: Path) -> None:
    base, services = dev_server
    image = tmp_path / "film.png"
    image.write_bytes(make_xray(12))
    sent = subprocess.run(
        [sys.executable, "-m", "raiox.tools.cli", "simulate-webhook", str(image), "--url", f"{base}{BASE_PATH}/webhook",
         "--submission-id", "7000001"], capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "HTTP 202" in sent.stdout
    with services.db.transaction() as conn:
        case_id = conn.execute("SELECT id FROM cases WHERE submission_id = '7000001'").fetchone()["id"]
    # No worker runs: only the webhook's poke of EMBED_URL (the same server) can make the case ready.
    state = wait_until(lambda: (s := case_state(services, case_id))["case"].status == "ready" and s, 60,
                       f"case {case_id} to be ready")
    assert state["results"][0].system == "S12"


def test_paths_and_privacy(dev_server: tuple) -> None:
    base, services = dev_server
    assert requests.get(f"{base}{BASE_PATH}/embed/health", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{base}{BASE_PATH}/webhook", timeout=10).status_code == 405
    stored = services.store.put(make_xray(3), namespace="xrays", extension=".png")
    signed = services.store.presigned_url(stored.key, 60)
    assert signed.startswith(base + "/objects/")
    assert requests.get(signed, timeout=10).content == make_xray(3)
    assert requests.get(signed.split("?")[0], timeout=10).status_code == 403
