"""Commands of the embed step: catalog import and listing, direct matching, the long-running worker."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from raiox.embed.matching import film_candidates, match_implants
from raiox.embed.rematch import rematch
from raiox.errors import RaioxError
from raiox.job_runner import default_worker_name
from raiox.repository import catalog
from raiox.services import Services
from raiox.sweeper.round import sweep
from raiox.tools.catalog import ManifestError, check_manifest, import_manifest, reembed_references
from raiox.tools.commands.common import (
    CommandServices,
    checked_image,
    describe_rematch,
    loaded_encoder,
    pass_services,
    require_references,
)

log = logging.getLogger(__name__)


@click.group("catalog")
def catalog_group() -> None:
    """The implant catalog: systems and their reference images."""


@catalog_group.command("import")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bars.")
@pass_services
def catalog_import(services: Services, manifest: Path, quiet: bool) -> None:
    """Import MANIFEST (.csv or .jsonl: manufacturer, system, type, connection, notes, images).

    CSV separates several images of one row with `|`; paths are relative to the manifest. Importing the
    same manifest again changes nothing.

    Optional size ranges in mm, both ends or neither: diameter_min_mm, diameter_max_mm, length_min_mm,
    length_max_mm (the admin page marks candidates whose ranges disagree with the reviewer's measurement);
    a row without them leaves the stored ranges as they are. docs/examples/catalog.csv is an example."""
    try:
        check_manifest(manifest)  # a bad manifest is refused before the database or the encoder starts
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    services.db  # noqa: B018 - the database is ready (or says why not) before the encoder takes seconds to load
    loaded_encoder(services)
    try:
        report = import_manifest(services, manifest, progress=not quiet)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{report.implants} implant rows, {report.images} images: {report.references_added} references "
        f"added, {report.references_present} already present (model {report.model_id})"
    )
    _rank_waiting_cases_again(services, "cli:catalog-import")


def _rank_waiting_cases_again(services: Services, actor: str) -> None:
    """Cases that waited for review while the catalog lacked these references get them as candidates now."""
    report = rematch(services, actor=actor)
    if report.ranked or report.reembedding:
        click.echo(describe_rematch(report))


def _add_specs(services: Services, specs: list[Any], films: int) -> None:
    from raiox.tools.spec_sheets import import_specs

    services.db  # noqa: B018 - the database is ready (or says why not) before the encoder takes seconds to load
    loaded_encoder(services)
    try:
        report = import_specs(services, specs, films_per_system=films)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{report.implants} systems from spec sheets: {report.references_added} reference films rendered "
               f"and embedded (model {report.model_id}); real films added later take over")
    _rank_waiting_cases_again(services, "cli:catalog-specs")


@catalog_group.command("import-specs")
@click.argument("sheets", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--films", default=6, show_default=True, type=click.IntRange(1, 40),
              help="Reference films rendered per system, across its sizes.")
@pass_services
def catalog_import_specs(services: Services, sheets: Path, films: int) -> None:
    """Systems from their manufacturers' spec sheets, with no films yet: SHEETS is a .csv (or .jsonl) with the
    columns manufacturer, system, body (parallel|tapered|hybrid), taper, thread_profile
    (v|square|buttress|reverse-buttress), thread_pitch_mm, thread_depth_mm, thread_leads, collar_mm,
    microthreads (yes|no), apex (flat|round|pointed), apex_vent, apex_grooves, connection
    (internal-hex|conical|external-hex|tri-channel), diameters_mm and lengths_mm (`|`-separated lists); only
    manufacturer, system, thread_pitch_mm, diameters_mm and lengths_mm are required. Each system is stored with
    its sheet and gets reference films rendered from its geometry at its sizes (shown as rendered on the admin
    page); once it has two real films (a catalog import, approved cases) those take over.
    docs/examples/specs.csv is an example."""
    from raiox.tools.spec_sheets import read_specs

    try:
        specs = [spec for _, spec in read_specs(sheets)]
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    _add_specs(services, specs, films)


@catalog_group.command("add-spec")
@click.option("--manufacturer", required=True)
@click.option("--system", required=True)
@click.option("--body", type=click.Choice(["parallel", "tapered", "hybrid"]), default="parallel", show_default=True)
@click.option("--thread-profile", type=click.Choice(["v", "square", "buttress", "reverse-buttress"]), default="v",
              show_default=True)
@click.option("--pitch", "thread_pitch_mm", required=True, type=float, help="Thread pitch, mm.")
@click.option("--depth", "thread_depth_mm", type=float, default=None, help="Thread depth, mm [typical for its size].")
@click.option("--leads", "thread_leads", type=click.IntRange(1, 3), default=1, show_default=True)
@click.option("--collar", "collar_mm", type=float, default=1.0, show_default=True, help="Collar height, mm.")
@click.option("--microthreads/--no-microthreads", default=False, show_default=True)
@click.option("--apex", type=click.Choice(["flat", "round", "pointed"]), default="round", show_default=True)
@click.option("--vent/--no-vent", "apex_vent", default=False, show_default=True)
@click.option("--grooves/--no-grooves", "apex_grooves", default=False, show_default=True)
@click.option("--connection", type=click.Choice(["internal-hex", "conical", "external-hex", "tri-channel"]),
              default="internal-hex", show_default=True)
@click.option("--diameters", "diameters_mm", required=True, help="Diameters sold, mm: 3.5,4.3,5.0")
@click.option("--lengths", "lengths_mm", required=True, help="Lengths sold, mm: 8,10,11.5,13")
@click.option("--films", default=6, show_default=True, type=click.IntRange(1, 40),
              help="Reference films rendered, across its sizes.")
@pass_services
def catalog_add_spec(services: Services, films: int, **sheet: Any) -> None:
    """One system from its manufacturer's spec sheet, with reference films rendered from it (see import-specs)."""
    from pydantic import ValidationError

    from raiox.tools.spec_sheets import SpecSheet

    try:
        spec = SpecSheet.model_validate(sheet)
    except ValidationError as exc:
        raise click.BadParameter("; ".join(f"{'.'.join(map(str, e['loc'])) or 'sheet'}: {e['msg']}"
                                           for e in exc.errors())) from None
    _add_specs(services, [spec], films)


@catalog_group.command("reembed")
@click.option("--model", default=None, help="open_clip model of the new encoder (default: RAIOX_CLIP_MODEL).")
@click.option("--pretrained", default=None,
              help="Its weights, a tag or a checkpoint path (default: RAIOX_CLIP_PRETRAINED).")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Images per forward pass (default: RAIOX_EMBED_BATCH_SIZE).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@pass_services
def catalog_reembed(services: Services, model: str | None, pretrained: str | None, batch_size: int | None,
                    quiet: bool, as_json: bool) -> None:
    """Embed every reference image with another encoder, for a model change; then build its index.

    Resumable: each batch is committed, and a run embeds only references that have no row under the new
    model yet, so running it again continues where it stopped. Safe while cases arrive: the configured model
    keeps answering from its own rows and index; references learned meanwhile are picked up by the run's
    last pass or by running it again. When it is done, switch with RAIOX_CLIP_MODEL / RAIOX_CLIP_PRETRAINED,
    then run it once more to add what was approved in between."""
    settings = services.settings
    if model and model != settings.raiox_clip_model and not pretrained:
        raise click.UsageError("--model needs --pretrained: the configured weights belong to another model")
    update: dict[str, object] = {}
    if model:
        update["raiox_clip_model"] = model
    if pretrained:
        update["raiox_clip_pretrained"] = pretrained
    if batch_size:
        update["raiox_embed_batch_size"] = batch_size
    with CommandServices(settings.model_copy(update=update)) as target:
        target.db  # noqa: B018 - ready before the encoder loads
        encoder = loaded_encoder(target)
        report = reembed_references(target, progress=not quiet)
        current = settings.raiox_clip_model, settings.raiox_clip_pretrained
        switch = (target.settings.raiox_clip_model, target.settings.raiox_clip_pretrained)
    if as_json:
        click.echo(json.dumps({"model_id": report.model_id, "added": report.added, "failed": report.failed,
                               "index": report.index, "device": encoder.device}))
        return
    for key, reason in list(report.failed.items())[:10]:
        click.echo(f"skipped {key}: {reason}", err=True)
    if len(report.failed) > 10:
        click.echo(f"… and {len(report.failed) - 10} more skipped", err=True)
    click.echo(f"{report.added} reference images embedded as {report.model_id} ({len(report.failed)} skipped); "
               f"its HNSW index is {report.index}")
    if switch != current:
        setting = f"RAIOX_CLIP_MODEL={switch[0]} " if switch[0] else ""
        click.echo(f"matching still uses {current[1] or 'the shipped encoder'}; switch with "
                   f"{setting}RAIOX_CLIP_PRETRAINED={switch[1]}")


@catalog_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_services
def catalog_list(services: Services, as_json: bool) -> None:
    """Implant systems with their reference-image counts per model id."""
    with services.db.transaction() as conn:
        rows = catalog.catalog_summary(conn)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.model_dump(), default=str))
        return
    if not rows:
        click.echo("the catalog is empty: raiox catalog import MANIFEST")
        return
    click.echo(f"{'manufacturer':<24} {'system':<28} {'refs':>5}  model")
    for row in rows:
        click.echo(f"{row.manufacturer[:24]:<24} {row.system[:28]:<28} {row.references:>5}  {row.model_id or '-'}")


@click.command("match")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_services
def match_command(services: Services, image: Path, as_json: bool) -> None:
    """The top implant systems for IMAGE, without creating a case: for the film (its best answer over every
    implant on it), then for each implant found, with what was measured and read of it."""
    data = checked_image(image, services.settings)
    require_references(services)
    encoder = loaded_encoder(services)
    try:
        implants = match_implants(services, data)
    except RaioxError as exc:
        raise click.ClickException(f"{image}: {exc}") from None
    candidates = film_candidates(implants, services.settings.raiox_top_k)
    if as_json:
        click.echo(json.dumps({"model_id": encoder.model_id, "candidates": [c.model_dump() for c in candidates],
                               "implants": [i.model_dump() for i in implants]}))
        return
    if not candidates:
        click.echo(f"no references embedded by {encoder.model_id}: import a catalog first")
    for candidate in candidates:
        click.echo(f"{candidate.rank}. {candidate.manufacturer} {candidate.system}  "
                   f"similarity {candidate.similarity:.3f}")
    if len(implants) > 1 or not implants[0].found:
        for implant in implants:
            where = "no implant stood out: the whole film" if not implant.found else f"implant {implant.position + 1}"
            best = implant.candidates[0] if implant.candidates else None
            click.echo(f"  {where}: " + (f"{best.manufacturer} {best.system} ({best.similarity:.3f})" if best
                                          else "no candidate"))


@click.command("worker")
@click.option("--once", is_flag=True, help="Run until no embed or notify job is due, then exit.")
@click.option("--poll", default=2.0, show_default=True, type=click.FloatRange(0.01),
              help="Seconds between looks when idle.")
@pass_services
def worker_command(services: Services, once: bool, poll: float) -> None:
    """Run due fetch, embed and notify jobs continuously (for a long-lived GPU container): the sweeper.

    Every round records what the outage inbox kept, fetches due X-rays, embeds due cases, reconciles with
    Jotform when due and delivers due decisions; it prints one JSON line per round that did something. Several
    workers may run at once: jobs are claimed with FOR UPDATE SKIP LOCKED."""
    try:
        services.refuse_placeholder_secrets()
    except RaioxError as exc:
        raise click.ClickException(exc.message) from None
    services.db  # noqa: B018 - ready before the encoder loads
    encoder = loaded_encoder(services)
    name = default_worker_name()
    click.echo(f"worker {name} with {encoder.model_id} on {encoder.device}", err=True)
    try:
        while True:
            try:
                report = sweep(services, worker=name, embed_here=True)
            except Exception:  # an outage (database, object storage) must not end the worker
                if once:
                    raise
                log.exception("sweep failed; trying again in %g s", poll)
                time.sleep(poll)
                continue
            if report.worked:
                click.echo(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **report.as_dict()}))
            elif once:
                return
            else:
                time.sleep(poll)
    except KeyboardInterrupt:
        click.echo("worker stopped", err=True)
