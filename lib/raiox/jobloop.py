"""What every durable-job loop shares: worker names, backoff with jitter, the lost-lease signal, and the
fire-and-forget poke that starts the next step early."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from datetime import timedelta
from typing import Any

import requests
from pydantic import SecretStr

log = logging.getLogger(__name__)


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def retry_delay(attempts: int, *, base: float = 5.0, cap: float = 600.0) -> timedelta:
    """Exponential backoff with jitter: up to base, 2·base, 4·base … (at least half of each), capped at `cap`."""
    return timedelta(seconds=random.uniform(0.5, 1.0) * min(cap, base * 2 ** (attempts - 1)))


class LostLease(RuntimeError):
    """The job was taken over by another worker while this one worked on it."""


def poke(url: str | None, token: SecretStr | None, body: dict[str, Any], *, what: str) -> threading.Thread | None:
    """POST `body` to the next step's URL in the background (Bearer `token`). Only a speed-up: if it fails,
    the job still waits in the table for the sweeper. Returns the thread (None when no URL is set)."""
    if not url:
        return None
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}

    def send() -> None:
        try:
            response = requests.post(url, json=body, headers=headers, timeout=(2, 5))
            if response.status_code >= 400:
                log.warning("%s answered HTTP %d; the job waits for the sweeper", what, response.status_code)
        except requests.RequestException as exc:  # the URL is not logged: it may carry credentials
            log.warning("%s failed (%s); the job waits for the sweeper", what, type(exc).__name__)

    thread = threading.Thread(target=send, name=what.replace(" ", "-"), daemon=True)
    thread.start()
    return thread
