"""Reference pages generated from the code (docs/settings.md from `Settings`, docs/cli.md from the click
commands), written into the docs by cog and checked by `cog --check` in `make test`."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from raiox.settings import SECTIONS, Settings


def _default(name: str, field: FieldInfo) -> str:
    if field.default is None:
        return "unset"
    if isinstance(field.default, Path):
        return f"`{field.default}`"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    if field.default == "":
        return "empty"
    return f"`{field.default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_markdown() -> str:
    """Every setting, by section: variable, default, whether it is a secret, and what it does."""
    out: list[str] = []
    for name, field in Settings.model_fields.items():
        if name in SECTIONS:
            out += ["", f"## {SECTIONS[name]}", "", "| variable | default | meaning |", "|---|---|---|"]
        secret = " **Secret: never logged or answered.**" if field.annotation in (SecretStr, SecretStr | None) else ""
        out.append(f"| `{name.upper()}` | {_default(name, field)} | {_cell(field.description or '')}{secret} |")
    return "\n".join(out).lstrip("\n") + "\n"


def _commands(group: click.Group, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found: list[tuple[list[str], click.Command]] = []
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):  # list_commands: the CLI loads its commands on demand
        command = group.get_command(ctx, name)
        assert command is not None
        found.append(([*path, name], command))
        if isinstance(command, click.Group):
            found += _commands(command, [*path, name])
    return found


def cli_markdown(main: click.Group) -> str:
    """`--help` of every command and subcommand, as the terminal shows it."""
    out: list[str] = []
    for path, command in _commands(main, ["raiox"]):
        ctx = click.Context(command, info_name=" ".join(path), terminal_width=100, max_content_width=100)
        out += [f"## {' '.join(path)}", "", "```text", command.get_help(ctx), "```", ""]
    return "\n".join(out)
