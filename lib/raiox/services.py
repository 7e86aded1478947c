"""The long-lived things a warm process reuses across calls: settings, database pool, object store, identifier."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from raiox.adapters.storage import ObjectStore, open_store
from raiox.database import Database
from raiox.errors import NotConfigured
from raiox.settings import Settings, get_settings

if TYPE_CHECKING:
    from raiox.adapters.sandbox import DecoderPool
    from raiox.shape.identifier import ShapeIdentifier

T = TypeVar("T")


class Services:
    """Created once per process (see `get_services`); each part is built on first use, once."""

    def __init__(self, settings: Settings, **ready: Any) -> None:
        """`ready` hands over parts built elsewhere (e.g. `encoder=` loaded once for many tests)."""
        self.settings = settings
        self._lock = threading.RLock()
        self._built: dict[str, Any] = dict(ready)

    def _once(self, name: str, build: Callable[[], T]) -> T:
        if name not in self._built:
            with self._lock:
                if name not in self._built:
                    self._built[name] = build()
        return self._built[name]  # type: ignore[no-any-return]

    @property
    def db(self) -> Database:
        return self._once("db", lambda: Database.from_settings(self.settings))

    @property
    def store(self) -> ObjectStore:
        return self._once("store", lambda: open_store(self.settings))

    @property
    def encoder(self) -> ShapeIdentifier:
        """What turns films into implants and vectors, loaded on first use (only the embed function and the CLI
        need torch)."""
        from raiox.shape.identifier import ShapeIdentifier

        return self._once("encoder", lambda: ShapeIdentifier.from_settings(self.settings))

    @property
    def decoders(self) -> DecoderPool:
        """Child processes that decode untrusted films under a memory and a time limit (started on first use)."""
        from raiox.adapters.sandbox import DecoderPool

        return self._once("decoders", lambda: DecoderPool.from_settings(self.settings))

    def refuse_placeholder_secrets(self) -> None:
        """In production, NotConfigured naming (never showing) every secret left empty or as a placeholder."""
        if not self.settings.is_dev:
            names = self._once("placeholders", self.settings.placeholder_secrets)
            if names:
                raise NotConfigured(f"refusing to run with empty or placeholder secrets: {', '.join(names)}")

    def check(self, *, storage: bool = True) -> dict[str, str]:
        """A deep health check: does the database answer, and (when this function uses it) object storage?
        Each part says `ok` or what went wrong, in words that carry no secret."""
        parts: dict[str, str] = {}
        try:
            with self.db.transaction() as conn:
                conn.execute("SELECT 1")
            parts["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            parts["database"] = f"unreachable ({type(exc).__name__})"
        if storage:
            try:
                self.store.exists("health/check")
                parts["storage"] = "ok"
            except Exception as exc:  # noqa: BLE001
                parts["storage"] = f"unreachable ({type(exc).__name__})"
        return parts

    def close(self) -> None:
        if "db" in self._built:
            self._built.pop("db").close()
        if "decoders" in self._built:
            self._built.pop("decoders").close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_services: Services | None = None
_services_lock = threading.Lock()


def get_services() -> Services:
    """The process-wide services of a deployed function, built from the environment on first call (tools
    build their own `Services(settings)` instead)."""
    global _services
    with _services_lock:
        if _services is None:
            _services = Services(get_settings())
        return _services


def reset_services() -> None:
    """Close and forget the process-wide services, so the next `get_services` reads the environment again
    (for tests of the function entry files)."""
    global _services
    with _services_lock:
        if _services is not None:
            _services.close()
        _services = None
        get_settings.cache_clear()
