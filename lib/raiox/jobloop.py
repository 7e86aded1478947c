"""What every durable-job loop shares: worker names, backoff with jitter, and the lost-lease signal."""

from __future__ import annotations

import os
import random
import socket
from datetime import timedelta


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def retry_delay(attempts: int, *, base: float = 5.0, cap: float = 600.0) -> timedelta:
    """Exponential backoff with jitter: up to base, 2·base, 4·base … (at least half of each), capped at `cap`."""
    return timedelta(seconds=random.uniform(0.5, 1.0) * min(cap, base * 2 ** (attempts - 1)))


class LostLease(RuntimeError):
    """The job was taken over by another worker while this one worked on it."""
