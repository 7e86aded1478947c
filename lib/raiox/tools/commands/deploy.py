"""Commands that prepare a deployment: the doctl folder for the functions."""

from __future__ import annotations

from pathlib import Path

import click

from raiox.tools.deploy import FUNCTION_LIMIT_BYTES, build_do_project, install_requirements, upload_size


@click.group("deploy")
def deploy_group() -> None:
    """Deployment artefacts."""


@deploy_group.command("build")
@click.option("--out", default="build/do", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--measure", is_flag=True,
              help="Also install each function's requirements (Linux, CPython 3.11) and report its upload size.")
def deploy_build(out: Path, measure: bool) -> None:
    """Lay out OUT for `doctl serverless deploy OUT` from project.yml, functions/ and lib/."""
    for folder in build_do_project(out):
        line = f"{folder.relative_to(out)}"
        if measure:
            install_requirements(folder)
            size = upload_size(folder)
            line += f"  {size / 2**20:.1f} MiB zipped + base64 (limit {FUNCTION_LIMIT_BYTES / 2**20:.0f} MiB)"
            if size > FUNCTION_LIMIT_BYTES:
                raise click.ClickException(f"{line}: over DigitalOcean's limit")
        click.echo(line)
    click.echo(f"deploy with: doctl serverless deploy {out} --env .env")
