"""Commands that prepare a deployment: the doctl folder for the functions, and a check of .env beforehand."""

from __future__ import annotations

from pathlib import Path

import click

from raiox.tools.deploy.build import FUNCTION_LIMIT_BYTES, build_do_project, run_build_script, upload_size
from raiox.tools.deploy.check import Verdict, check_services, check_values, scrub, secrets_of
from raiox.tools.deploy.envfile import Resolved, breaks_yaml, read_env_file, resolve
from raiox.tools.deploy.manifest import MANIFEST, ManifestError, placeholders, read_manifest, scan
from raiox.tools.deploy.smoke import smoke

ENV_OPTION = click.option(
    "--env", "env_file", default=".env", show_default=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The env file you will hand to `doctl serverless deploy --env`.")


@click.group("deploy")
def deploy_group() -> None:
    """Deployment to DigitalOcean (docs/deploy.md)."""


def _resolved(env_file: Path) -> Resolved:
    """What the deployer will paste for each placeholder: a non-empty shell variable, else the env file's value."""
    try:
        scan(MANIFEST.read_text(encoding="utf-8"))
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    return resolve(placeholders(read_manifest()), read_env_file(env_file))


def _warn_about_shell(resolved: Resolved) -> None:
    for name in sorted(resolved.overridden):
        click.echo(f"warning: {name} is set in your shell to another value than in the env file; the deployer "
                   f"uses the shell's (unset {name} to use the file's)", err=True)


@deploy_group.command("build")
@click.option("--out", default="build/do", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@ENV_OPTION
@click.option("--measure", is_flag=True,
              help="Also run each function's build.sh here (Linux CPython 3.11 wheels) and report its upload size.")
def deploy_build(out: Path, env_file: Path, measure: bool) -> None:
    """Lay out OUT for `doctl serverless deploy OUT --env ENV_FILE` from project.yml, functions/, lib/ and admin/.

    Optional settings (`# optional` in project.yml) that are empty in ENV_FILE and your shell are left out of
    OUT/project.yml, so they keep their defaults: the deployer stops on an empty value. Values themselves are
    never written to OUT; without ENV_FILE every optional line stays."""
    values = None
    if env_file.is_file():
        resolved = _resolved(env_file)
        _warn_about_shell(resolved)
        broken = sorted(name for name, value in resolved.values.items() if breaks_yaml(value))
        if broken:
            raise click.ClickException(f"{', '.join(broken)}: a double quote or a backslash in the value breaks "
                                       "the deployed manifest; choose another value")
        values = resolved.values
    else:
        click.echo(f"warning: {env_file} not found: every optional setting stays a placeholder, so each must be "
                   "set when you deploy", err=True)
    try:
        folders = build_do_project(out, values)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    for folder in folders:
        line = f"{folder.relative_to(out)}"
        if measure:
            run_build_script(folder)
            size = upload_size(folder)
            line += f"  {size / 2**20:.1f} MiB zipped + base64 (limit {FUNCTION_LIMIT_BYTES / 2**20:.0f} MiB)"
            if size > FUNCTION_LIMIT_BYTES:
                raise click.ClickException(f"{line}: over DigitalOcean's limit")
        click.echo(line)
    click.echo(f"deploy with: doctl serverless deploy {out} --env {env_file}")


@deploy_group.command("check")
@ENV_OPTION
@click.option("--offline", is_flag=True, help="Check the values only: no database, bucket or embed call.")
def deploy_check(env_file: Path, offline: bool) -> None:
    """Before deploying: every required setting filled in (no CHANGE-ME or example value left), values the
    deployer can paste, the database reachable with pgvector, the bucket private, embed answering /health.
    Values come as the deployer takes them: a non-empty shell variable wins over ENV_FILE. Exits 1 when
    anything is wrong; never prints a secret."""
    if not env_file.is_file():
        raise click.ClickException(f"{env_file} not found: copy .env.example to it and fill it in")
    resolved = _resolved(env_file)
    findings = check_values(read_manifest(), MANIFEST.read_text(encoding="utf-8"), resolved)
    if not offline:
        findings += check_services(resolved)
    secrets = secrets_of(resolved)
    for finding in findings:
        click.echo(scrub(finding.line(), secrets))
    problems = sum(finding.verdict is Verdict.PROBLEM for finding in findings)
    if problems:
        click.echo(f"{problems} problem(s): fix them before `raiox deploy build` and `doctl serverless deploy`")
        raise SystemExit(1)
    click.echo("ready to deploy: raiox deploy build --env " + str(env_file))


@deploy_group.command("smoke")
@ENV_OPTION
@click.option("--functions-url", required=True,
              help="The package's web address, https://<host>/api/v1/web/<namespace>/raiox (`doctl serverless "
                   "functions get raiox/webhook --url`, less /webhook).")
@click.option("--attempts", default=5, show_default=True, type=click.IntRange(1, 60),
              help="Tries per check, 6 s apart (a function just deployed may answer late).")
def deploy_smoke(env_file: Path, functions_url: str, attempts: int) -> None:
    """After `doctl serverless deploy`: /health of webhook, approve, notify and EMBED_URL, then signed calls that
    change nothing (deep health of webhook and embed: database and object storage reached with the deployed
    tokens) and an unsigned one that must be refused. Exits 1 on any problem; never prints a secret."""
    if not env_file.is_file():
        raise click.ClickException(f"{env_file} not found")
    resolved = _resolved(env_file)
    findings = smoke(functions_url, resolved.values, attempts=attempts)
    secrets = secrets_of(resolved)
    for finding in findings:
        click.echo(scrub(finding.line(), secrets))
    problems = sum(finding.verdict is Verdict.PROBLEM for finding in findings)
    if problems:
        click.echo(f"{problems} problem(s) after the deploy")
        raise SystemExit(1)
    click.echo("deployed and answering")
