"""What every command shares: the settings and services of one `raiox` invocation, a database that is ready
before its pool opens, the encoder check, the checks of inputs that run before anything heavy loads, and the
one place where an error becomes the line a user reads."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import cached_property, update_wrapper
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click
import psycopg
from psycopg_pool import PoolTimeout
from pydantic import ValidationError

from raiox import migrations
from raiox.database import Database, DatabaseNotMigrated, connect, database_url
from raiox.errors import RaioxError
from raiox.services import Services
from raiox.settings import Settings, redact_url

if TYPE_CHECKING:
    from raiox.embed.rematch import RematchReport
    from raiox.shape.identifier import ShapeIdentifier

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Longest wait for a configured database to answer the readiness check (the pool's own timeout is longer).
READY_CHECK_SECONDS = 5


def ready_database_url(settings: Settings, *, say: Callable[[str], None] | None = None) -> str:
    """The database's URL once it can serve a command: the embedded one is started and migrated (as
    `raiox dev` does); a configured one must answer and have every migration, else one ClickException that
    says what to do. Checked with one plain connection, so the pool never waits for a database it cannot use."""
    say = say or (lambda line: click.echo(line, err=True))
    if settings.database_url is None:
        pgdata = settings.raiox_home / "pg"
        if not (pgdata / "PG_VERSION").exists():
            say(f"raiox: creating the embedded database in {pgdata}")
        url = database_url(settings)
        applied = migrations.migrate(url)
        if applied:
            say(f"raiox: embedded database migrated ({len(applied)} migration(s) applied)")
        return url
    url = database_url(settings)
    try:
        with connect(url, connect_timeout=READY_CHECK_SECONDS) as conn:
            pending = migrations.pending_migrations(conn)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot connect to the database {redact_url(url)}: "
                                   f"{_first_line(exc)}") from None
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending[:3]) + (" …" if len(pending) > 3 else "")
        raise click.ClickException(f"the database {redact_url(url)} lacks {len(pending)} migration(s) ({names}): "
                                   "run `raiox db migrate`")
    return url


class CommandServices(Services):
    """A command's services: its database is made ready (`ready_database_url`) before the pool opens."""

    @property
    def db(self) -> Database:
        def open_ready() -> Database:
            settings = self.settings
            return Database(ready_database_url(settings), max_size=settings.database_pool_max,
                            timeout=settings.database_timeout_seconds)

        return self._once("db", open_ready)


class Invocation:
    """Built by the `raiox` group; the settings (environment and `.env`) are read once, on first use, so a
    command that makes its own (demo, benchmarks) never depends on them."""

    @cached_property
    def settings(self) -> Settings:
        return Settings()

    @cached_property
    def services(self) -> Services:
        return CommandServices(self.settings)

    def close(self) -> None:
        if "services" in self.__dict__:
            self.services.close()


def pass_services(command: F) -> F:
    """Hand the command this invocation's services as its first argument (nothing is opened until used)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return command(click.get_current_context().ensure_object(Invocation).services, *args, **kwargs)

    return update_wrapper(call, command)  # type: ignore[return-value]


def pass_settings(command: F) -> F:
    """Hand the command this invocation's settings as its first argument."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return command(click.get_current_context().ensure_object(Invocation).settings, *args, **kwargs)

    return update_wrapper(call, command)  # type: ignore[return-value]


def loaded_encoder(services: Services) -> ShapeIdentifier:
    """The configured encoder, loaded now, so a missing model is one clear error before any work starts.
    Call it after the command's inputs were checked: loading takes seconds."""
    from raiox.adapters.encoder import EncoderUnavailable

    try:
        return services.encoder
    except EncoderUnavailable as exc:
        raise click.ClickException(str(exc)) from None


def checked_image(path: Path, settings: Settings) -> bytes:
    """The bytes of an X-ray file, refused in one line (before any model loads) unless they decode as one."""
    from raiox.adapters.imaging import ImageError, inspect_image

    data = path.read_bytes()
    try:
        inspect_image(data, max_pixels=settings.raiox_max_image_pixels)
    except ImageError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    return data


def checked_labelled_folder(folder: Path) -> int:
    """The number of films in a lab's labelled folder (`<system>/<film>`), refused in one line before any model
    loads when it holds none or a file that is not a film."""
    from raiox.adapters.imaging import ImageError, sniff

    films = [path for path in sorted(folder.glob("*/*")) if path.is_file() and not path.name.startswith(".")]
    if not films:
        raise click.ClickException(f"no films in {folder}: a labelled folder holds one sub-folder per system, named "
                                   f"as in the catalog, with that system's films in it ({folder}/<system>/<film>)")
    for path in films:
        with path.open("rb") as file:
            head = file.read(132)
        try:
            sniff(head)
        except ImageError as exc:
            raise click.ClickException(f"{path}: {exc} (a labelled folder holds only films)") from None
    return len(films)


def require_references(services: Services) -> None:
    """Refuse in one line, before the encoder loads, when the catalog has no reference image at all."""
    from raiox.repository import catalog

    with services.db.transaction() as conn:
        if not any(row.references for row in catalog.catalog_summary(conn)):
            raise click.ClickException("the catalog is empty: import one first (raiox catalog import MANIFEST; "
                                       "docs/examples/catalog.csv shows the columns)")


class HttpUrl(click.ParamType[str, Any]):
    """An absolute http(s) URL with a host (refused in one line otherwise)."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(f"{text!r} is not an http:// or https:// URL with a host", param, ctx)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            self.fail(f"{text!r} has a port outside 1-65535", param, ctx)
        return text


HTTP_URL = HttpUrl()
PORT = click.IntRange(0, 65535)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def explain(exc: Exception) -> str:
    """The line a user reads for an error no command turned into one itself (never a traceback, never a
    setting's value: pydantic's own message would show it)."""
    if isinstance(exc, RaioxError):
        return exc.message
    if isinstance(exc, ValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper() or 'settings'}: {e['msg']}"
                             for e in exc.errors())
        return f"invalid setting: {problems}"
    if isinstance(exc, DatabaseNotMigrated):
        return str(exc)
    if isinstance(exc, PoolTimeout | psycopg.OperationalError):
        return f"the database does not answer ({_first_line(exc)}): is it running, and is DATABASE_URL right?"
    if isinstance(exc, migrations.MigrationError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    from raiox.adapters.encoder import EncoderUnavailable

    if isinstance(exc, EncoderUnavailable):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {_first_line(exc)} (a bug; `raiox -v …` logs the traceback)"


class RaioxGroup(click.Group):
    """The `raiox` group: any error a command did not explain becomes one line on stderr and exit status 1;
    with -v its traceback is logged as well."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # the last place before the user's terminal
            log.info("%s failed", ctx.invoked_subcommand or "raiox", exc_info=True)
            raise click.ClickException(explain(exc)) from None


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def describe_rematch(report: RematchReport) -> str:
    """One line on what ranking the waiting cases again did."""
    if not report.ranked and not report.reembedding:
        return "no case awaiting review to rank again"
    parts = [f"{len(report.ranked)} case(s) awaiting review ranked again against the catalog (model {report.model_id})"]
    if report.reembedding:
        parts.append(f"{len(report.reembedding)} embedded by another encoder handed back to the embed step")
    return "; ".join(parts)
