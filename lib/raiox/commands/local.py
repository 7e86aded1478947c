"""Commands for running Raiox on one machine: the one-port dev server."""

from __future__ import annotations

import os
import socket

import click

from raiox import migrations
from raiox.database import database_url
from raiox.devserver import BASE_PATH, FUNCTIONS, start_dev_server
from raiox.services import get_services, reset_services


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def configure_local(host: str, port: int) -> None:
    """Defaults that make one process on one port a complete Raiox (explicit settings still win)."""
    os.environ.setdefault("RAIOX_ENV", "dev")
    os.environ.setdefault("RAIOX_PUBLIC_URL", f"http://{host}:{port}")
    os.environ.setdefault("EMBED_URL", f"http://{host}:{port}{BASE_PATH}/embed")
    reset_services()


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, help="0 picks a free port.")
def dev_command(host: str, port: int) -> None:
    """Serve every function, the admin page and local objects on one port (embedded defaults)."""
    port = port or free_port(host)
    configure_local(host, port)
    services = get_services()
    migrations.migrate(database_url(services.settings))
    server = start_dev_server(services, host, port)
    base = f"http://{host}:{port}"
    click.echo(f"Raiox dev server on {base} (RAIOX_ENV={services.settings.raiox_env})")
    click.echo(f"  admin page   {base}/admin/")
    for name in FUNCTIONS:
        click.echo(f"  {name:<12} {base}{BASE_PATH}/{name}")
    click.echo("Ctrl-C stops it.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
        reset_services()
