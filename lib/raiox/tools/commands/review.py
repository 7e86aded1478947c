"""Commands for review and operations: reviewers of the admin page, ranking waiting cases again, erasing a case,
the system at a glance."""

from __future__ import annotations

import json
import sys

import click

from raiox import deletions
from raiox.embed.rematch import rematch
from raiox.errors import RaioxError
from raiox.review import accounts, system
from raiox.services import Services
from raiox.tools.commands.common import (
    describe_rematch,
    loaded_encoder,
    pass_services,
    require_references,
    stdin_is_terminal,
)


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
        if not password:
            raise click.ClickException("no password on standard input: --password-stdin reads its first line")
    elif not stdin_is_terminal():
        raise click.ClickException("no terminal to ask for the password: give it on standard input with "
                                   f"--password-stdin (e.g. `raiox reviewer add {name} --password-stdin < file`)")
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
    for reviewer in accounts.list_reviewers(services):
        state = "disabled" if reviewer.disabled else "enabled"
        click.echo(f"{reviewer.name:<24} {state:<9} password set {reviewer.password_changed_at:%Y-%m-%d %H:%M}")


@click.group("case")
def case_group() -> None:
    """Cases: rank those awaiting review again; erase a patient's data on request."""


@case_group.command("rematch")
@click.argument("case_ids", nargs=-1, type=click.IntRange(1))
@pass_services
def case_rematch(services: Services, case_ids: tuple[int, ...]) -> None:
    """Rank the candidates of every case awaiting review (or of CASE_IDS) again, against the catalog as it is
    now: after references were added, or after switching encoders (then the embed step embeds their X-rays
    again). Decided cases keep the candidates their decision was made on. `catalog import` runs this itself."""
    require_references(services)
    loaded_encoder(services)
    report = rematch(services, actor="cli:rematch", case_ids=case_ids or None)
    for case_id, status in report.not_waiting.items():
        click.echo(f"case {case_id} is not awaiting review ({status}): left as it is", err=True)
    click.echo(describe_rematch(report))


@case_group.command("erase")
@click.argument("case_id", type=click.IntRange(1))
@click.option("--by", "actor", required=True, help="Who asked for (or carries out) the erasure, for the audit trail.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_services
def case_erase(services: Services, case_id: int, actor: str, yes: bool) -> None:
    """Erase CASE_ID: its X-rays leave object storage, every version of them (unless another case has the same
    bytes), its personal fields, free texts and what its jobs kept leave the database, references learned from it
    are removed, and its submission is deleted at Jotform (a job, retried while Jotform is unreachable); the
    decision's implant and time and the trail of who did what stay, anonymous, for statistics. Cannot be undone.
    Running it again on an erased case retries a deletion at Jotform that failed."""
    if not yes and not stdin_is_terminal():
        raise click.ClickException(f"no terminal to confirm erasing case {case_id}: add --yes")
    if not yes:
        click.confirm(f"Erase case {case_id}? This cannot be undone", abort=True)
    try:
        report = deletions.erase_now(services, case_id, actor=f"cli:{actor}")
    except RaioxError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"case {case_id} erased; {report.objects_deleted} object(s) deleted"
               + (f", {report.objects_left} left for the next sweep (object storage unreachable)"
                  if report.objects_left else "") + f"; {report.at_source.get(case_id, '')}")


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_services
def status_command(services: Services, as_json: bool) -> None:
    """The system at a glance: jobs due, waiting to retry, running and failed per kind (with the oldest wait),
    when each sweeper and worker last ran, reconciliation, failed deliveries, cases needing attention."""
    report = system.system_status(services)
    if as_json:
        click.echo(json.dumps(report))
        return
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}")
    click.echo(f"{'jobs':<8} {'due':>5} {'retry':>6} {'running':>8} {'failed':>7}  oldest due")
    for kind, counts in report["jobs"].items():
        click.echo(f"{kind:<8} {counts['due']:>5} {counts['waiting_to_retry']:>6} {counts['running']:>8} "
                   f"{counts['failed']:>7}  {counts['oldest_due_seconds']:.0f} s")
    click.echo("cases    " + ", ".join(f"{status} {n}" for status, n in sorted(report["cases"].items())))
    click.echo(f"needs attention {report['needs_attention']}, failed deliveries {report['failed_deliveries']}")
    for name, beat in report["heartbeats"].items():
        click.echo(f"{name:<32} last ran {beat['seconds_ago']:.0f} s ago{'  (stale)' if beat['stale'] else ''}")
    for form in report["reconciliation"]:
        error = f", last error: {form['last_error']}" if form["last_error"] else ""
        click.echo(f"reconciliation of form {form['form_id']}: last ran {form['last_run_at'] or 'never'}, "
                   f"{form['recorded']} recorded{error}")
