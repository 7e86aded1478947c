"""Commands for review: the reviewers who may sign in to the admin page."""

from __future__ import annotations

import sys

import click

from raiox.review import accounts
from raiox.services import Services
from raiox.tools.commands.common import pass_services


@click.group("reviewer")
def reviewer_group() -> None:
    """Reviewers of the admin page (passwords are stored as scrypt hashes only)."""


@reviewer_group.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--reset", is_flag=True, help="If NAME exists, give it this new password (and enable it).")
@pass_services
def reviewer_add(services: Services, name: str, password_stdin: bool, reset: bool) -> None:
    """Add reviewer NAME; asks for the password twice unless --password-stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        created = accounts.add_reviewer(services, name, password, reset=reset)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"reviewer {name} {'added' if created else 'has a new password'}")


@reviewer_group.command("disable")
@click.argument("name")
@pass_services
def reviewer_disable(services: Services, name: str) -> None:
    """Stop reviewer NAME from signing in; their tokens stop working at once."""
    if not accounts.disable_reviewer(services, name):
        raise click.ClickException(f"there is no reviewer {name}")
    click.echo(f"reviewer {name} disabled")


@reviewer_group.command("list")
@pass_services
def reviewer_list(services: Services) -> None:
    """Reviewers, whether each is enabled, and when their password was set."""
    for row in accounts.list_reviewers(services):
        state = "disabled" if row["disabled"] else "enabled"
        click.echo(f"{row['name']:<24} {state:<9} password set {row['password_changed_at']:%Y-%m-%d %H:%M}")
