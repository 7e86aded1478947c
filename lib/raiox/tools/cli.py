"""The `raiox` command line: thin commands over the library, each printing what it did.

Commands live beside their pipeline step (tools/commands/) and are imported only when run (or listed), so a
command starts, and refuses bad input, without loading what the others need."""

from __future__ import annotations

import importlib
import logging
import os

import click

from raiox import logs
from raiox.tools.commands.common import Invocation, RaioxGroup

# Command name → "module:attribute" of its click command.
COMMANDS = {
    "batch-test": "raiox.tools.commands.local:batch_test_command",
    "bench": "raiox.tools.commands.bench:bench_group",
    "case": "raiox.tools.commands.review:case_group",
    "catalog": "raiox.tools.commands.embedding:catalog_group",
    "db": "raiox.tools.commands.database:db_group",
    "demo": "raiox.tools.commands.local:demo_command",
    "deploy": "raiox.tools.commands.deploy:deploy_group",
    "dev": "raiox.tools.commands.local:dev_command",
    "eval": "raiox.tools.commands.quality:eval_command",
    "match": "raiox.tools.commands.embedding:match_command",
    "reconcile": "raiox.tools.commands.intake:reconcile_command",
    "render-cache": "raiox.tools.commands.quality:render_cache_command",
    "render-films": "raiox.tools.commands.quality:render_films_command",
    "reviewer": "raiox.tools.commands.review:reviewer_group",
    "simulate-webhook": "raiox.tools.commands.intake:simulate_webhook",
    "status": "raiox.tools.commands.review:status_command",
    "train": "raiox.tools.commands.quality:train_command",
    "worker": "raiox.tools.commands.embedding:worker_command",
}


class LazyCommands(RaioxGroup):
    """The group of COMMANDS, each imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyCommands)
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Raiox: identify dental implant systems on X-rays."""
    # Text for people at a terminal, unless RAIOX_LOG_FORMAT asks for JSON (a worker whose logs are collected).
    logs.configure(json=os.environ.get("RAIOX_LOG_FORMAT", "text").lower() == "json",
                   level=logging.INFO if verbose else logging.WARNING)
    invocation = ctx.ensure_object(Invocation)
    ctx.call_on_close(invocation.close)


if __name__ == "__main__":
    main()
