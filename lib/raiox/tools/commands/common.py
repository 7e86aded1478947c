"""What every command shares: the settings and services of one `raiox` invocation, and the encoder check."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property, update_wrapper
from typing import Any, TypeVar

import click

from raiox.adapters.encoder import Encoder, EncoderUnavailable
from raiox.services import Services
from raiox.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


class Invocation:
    """Built by the `raiox` group; the settings (environment and `.env`) are read once, on first use, so a
    command that makes its own (demo, benchmarks) never depends on them."""

    @cached_property
    def settings(self) -> Settings:
        return Settings()

    @cached_property
    def services(self) -> Services:
        return Services(self.settings)

    def close(self) -> None:
        if "services" in self.__dict__:
            self.services.close()


def pass_services(command: F) -> F:
    """Hand the command this invocation's services as its first argument."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return command(click.get_current_context().ensure_object(Invocation).services, *args, **kwargs)

    return update_wrapper(call, command)  # type: ignore[return-value]


def pass_settings(command: F) -> F:
    """Hand the command this invocation's settings as its first argument."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return command(click.get_current_context().ensure_object(Invocation).settings, *args, **kwargs)

    return update_wrapper(call, command)  # type: ignore[return-value]


def loaded_encoder(services: Services) -> Encoder:
    """The configured encoder, loaded now, so a missing model is one clear error before any work starts."""
    try:
        return services.encoder
    except EncoderUnavailable as exc:
        raise click.ClickException(str(exc)) from None
