"""Fixtures of the intake tests: Services over the test database and a local object folder, closed afterwards;
a test module sets its own defaults with a `service_defaults` fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raiox.services import Services
from raiox.settings import Settings


@pytest.fixture
def service_defaults() -> dict[str, Any]:
    return {}


@pytest.fixture
def make_services(db_url: str, tmp_path: Path, service_defaults: dict[str, Any]) -> Iterator[Callable[..., Services]]:
    built: list[Services] = []

    def make(**overrides: Any) -> Services:
        services = Services(Settings.given(**{
            "database_url": db_url, "raiox_home": tmp_path / "home", "raiox_env": "dev",
            "raiox_storage": (tmp_path / "objects").as_uri(), **service_defaults, **overrides}))
        built.append(services)
        return services

    yield make
    for services in built:
        services.close()


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    return make_services()
