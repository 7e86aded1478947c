"""Settings for Raiox on one machine: a throw-away home, one port for everything, child processes' environment.

Tools build their services from a `Settings` object they are given or make here; they never write to
`os.environ`. A child process (`raiox dev`, `raiox worker`) gets its settings as an environment built from
the object, without the parent's own Raiox variables, and runs where no stray `.env` is read.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from raiox.settings import Settings

BASE_PATH = "/api/v1/web/raiox"  # where `raiox dev` serves each function, as DigitalOcean does
SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def scratch_home(prefix: str) -> Path:
    """A new folder for a throw-away RAIOX_HOME, removed when the process exits."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, home, True)  # registered first, so it runs after pgserver stops
    return home


def isolated_settings(home: Path, **values: Any) -> Settings:
    """A Raiox of its own in `home` (embedded database, local objects), in dev mode with a fresh webhook
    token; nothing is read from the environment or a `.env`. `values` are further settings by field name."""
    home.mkdir(parents=True, exist_ok=True)
    return Settings.given(**{"raiox_home": home, "raiox_env": "dev", "webhook_token": secrets.token_urlsafe(24),
                             **values})


def one_port(settings: Settings, host: str, port: int) -> Settings:
    """Defaults that make one process on one port a complete Raiox: dev mode, local-object URLs and the embed
    and notify pokes pointing at itself (settings given explicitly still win)."""
    defaults = {"raiox_env": "dev", "raiox_public_url": f"http://{host}:{port}",
                "embed_url": f"http://{host}:{port}{BASE_PATH}/embed",
                "notify_url": f"http://{host}:{port}{BASE_PATH}/notify"}
    return settings.model_copy(update={k: v for k, v in defaults.items() if k not in settings.model_fields_set})


def environment_of(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) without any Raiox setting, plus every setting of
    `settings` as its variable. It holds secrets: hand it to a child process, never print it."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k.upper() not in SETTING_NAMES}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[name.upper()] = str(value)
    return env
