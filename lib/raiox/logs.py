"""Structured logs: one JSON object per event (python-json-logger), carrying what the event is about — the
function, the request or job id, the case and submission ids, the step, the outcome, the duration — so a
lab debugging from `doctl serverless activations logs` can follow one case. Human-readable for `raiox dev`.

Context is bound for a block with `bound(case_id=…, step=…)` and added to every record logged inside it.
Only ids and outcomes go into context: never a secret, a patient's or a clinic's name.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

CONTEXT_FIELDS = ("function", "request_id", "job_id", "case_id", "submission_id", "step", "outcome",
                  "duration_ms", "status")
_context: ContextVar[dict[str, Any]] = ContextVar("raiox_log_context", default={})  # noqa: B039 - never mutated


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add `fields` (those not None) to every record logged in this block, in this thread or task."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, Any]:
    return dict(_context.get())


_factory_installed = False


def _install_record_factory() -> None:
    """Every record created from now on carries the bound context, whatever handler writes it."""
    global _factory_installed
    if _factory_installed:
        return
    make_record = logging.getLogRecordFactory()

    def with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        for name, value in _context.get().items():
            setattr(record, name, value)
        return record

    logging.setLogRecordFactory(with_context)
    _factory_installed = True


class _TextFormatter(logging.Formatter):
    """`time level logger: message  key=value …` with the record's context, for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name))
        return f"{text}  {extra}" if extra else text


def configure(*, json: bool, level: int = logging.INFO) -> None:
    """Send logs to stderr as JSON lines or as text. Once per process: the first caller decides (a function's
    entry, or the CLI); where logging is already set up (a test runner, a host application), its handlers stay
    and records only gain the context."""
    _install_record_factory()
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                           rename_fields={"asctime": "time", "levelname": "level",
                                                          "name": "logger"}))
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
