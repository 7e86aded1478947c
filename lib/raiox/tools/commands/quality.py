"""Commands for identification quality: `raiox eval` and `raiox train`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from raiox.adapters.encoder import Encoder, random_model
from raiox.services import Services
from raiox.tools.commands.common import (
    CommandServices,
    checked_labelled_folder,
    loaded_encoder,
    pass_services,
    require_references,
)


def _untrained_like(encoder: Encoder) -> Encoder:
    """The same architecture with random weights (seed 0): the baseline every eval reports beside."""
    return Encoder.from_model(random_model(encoder.model_name), model_name=encoder.model_name, random_weights=True,
                              crop=encoder.crop, batch_size=encoder.batch_size)


@click.command("eval")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--rendered", default="eval48", show_default=True,
              help="Rendered set: `demo` (12 systems) or `eval<N>`; queries use seeds never used in training.")
@click.option("--queries", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="Rendered queries per system.")
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Instead: a labelled folder of films, FOLDER/<system>/<film> (one sub-folder per system, named "
              "as in the catalog), matched against the catalog in the database through the production query.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also evaluate the untrained architecture in the same run.")
@click.option("--approvals", default=0, show_default=True, type=click.IntRange(0),
              help="Also measure learning from approvals: this many approved films become references of the "
              "weakest quarter of systems, whose accuracy is shown before and after.")
@pass_services
def eval_command(services: Services, as_json: bool, rendered: str, queries: int, folder: Path | None,
                 baseline: bool, approvals: int) -> None:
    """Top-1 and top-3 accuracy of the configured encoder (RAIOX_CLIP_MODEL / RAIOX_CLIP_PRETRAINED)."""
    from raiox.tools.quality import approvals_effect, catalog_by_name, evaluate, evaluate_folder

    # Inputs first: loading the encoder takes seconds.
    if folder is not None:
        checked_labelled_folder(folder)
        require_references(services)
    else:
        try:
            designs = catalog_by_name(rendered)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rendered") from None
    encoder = loaded_encoder(services)
    learning = None
    if folder is not None:
        reports = [evaluate_folder(services, folder)]
    else:
        reports = [evaluate(encoder, designs, queries_per_system=queries)]
        if approvals:
            learning = approvals_effect(encoder, designs, reports[0], approvals=approvals, queries_per_system=queries)
        if baseline:
            reports.append(evaluate(_untrained_like(encoder), designs, queries_per_system=queries))
    if as_json:
        click.echo(json.dumps({"results": [r.as_dict() for r in reports],
                               **({"learning_from_approvals": learning} if learning else {})}))
        return
    for report in reports:
        suggestion = (f"; RAIOX_LOW_CONFIDENCE_MARGIN={report.suggested_low_confidence_margin:.4f} would flag "
                      f"{report.flagged_at_suggested_margin:.1%} of answers and 80% of the wrong ones"
                      if report.top1 < 1 else "")
        click.echo(f"{report.model_id}: {report.systems} systems, {report.queries} queries — top-1 "
                   f"{report.top1:.1%}, top-3 {report.top3:.1%}, low confidence {report.low_confidence_rate:.1%}"
                   + suggestion)
        mistakes = {truth: {p: n for p, n in row.items() if p != truth} for truth, row in report.confusion.items()}
        worst = sorted(((sum(m.values()), t, m) for t, m in mistakes.items() if m), reverse=True)[:5]
        for count, truth, predicted in worst:
            click.echo(f"    {truth}: {count} wrong top-1 ({', '.join(f'{p} x{n}' for p, n in predicted.items())})")
    if learning:
        click.echo(f"learning from approvals ({learning['approvals_per_system']} per system, "
                   f"{len(learning['systems'])} weakest systems): top-1 {learning['before']['top1']:.1%} -> "
                   f"{learning['after']['top1']:.1%}, top-3 {learning['before']['top3']:.1%} -> "
                   f"{learning['after']['top3']:.1%}")


@click.command("train")
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Learn a lab's labelled films, <system>/<film> (as `raiox eval --folder` reads them).")
@click.option("--from-database", "from_database", is_flag=True,
              help="Learn the catalog's reference images and approved cases' films.")
@click.option("--model", "model_name", default=None,
              help="open_clip architecture [rendered catalogs: raiox-small-rn; --folder/--from-database: the "
              "starting weights' own (their sidecar), else RAIOX_CLIP_MODEL].")
@click.option("--pretrained", default=None,
              help="Start from these weights, an open_clip tag or a checkpoint [rendered catalogs: scratch; "
              "--folder/--from-database: the configured encoder, RAIOX_CLIP_PRETRAINED, `shipped` by default].")
@click.option("--catalog", "catalog_name", default="eval48", show_default=True,
              help="Without --folder/--from-database: rendered systems to learn, `demo` or `eval<N>`.")
@click.option("--minutes", default=10.0, show_default=True,
              help="Time budget, rendering or preparing films included.")
@click.option("--films-per-system", default=200, show_default=True,
              help="Rendered catalogs: training films rendered per system before training starts.")
@click.option("--held-out", "held_out", default=0.25, show_default=True,
              help="--folder/--from-database: share of each system's films (never its last) left out of training "
              "and matched against the rest before and after, to report what training did; 0 trains on all.")
@click.option("--tune", type=click.Choice(["all", "head"]), default="all", show_default=True,
              help="--folder/--from-database: `all` trains every weight; `head` only the attention pool's value and "
              "output projections, on features of augmented films from the frozen trunk (ModifiedResNet "
              "architectures such as raiox-small-rn; thousands of cheap steps, but it learned less: "
              "docs/quality.md).")
@click.option("--lr", default=None, type=float,
              help="Peak learning rate [rendered catalogs from scratch: 2e-3; --folder/--from-database: 1e-3 "
              "(all), 5e-4 (head)].")
@click.option("--seed", default=0, show_default=True)
@click.option("--crop/--no-crop", default=False, show_default=True,
              help="Rendered catalogs: crop films to the implant first (on rendered films it lowered accuracy; "
              "docs/benchmarks.md). Fine-tuning keeps the starting encoder's choice.")
@click.option("--device", default="auto", show_default=True, help="`auto` (CUDA when present), `cpu` or `cuda`.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write; its .json sidecar names the architecture, so RAIOX_CLIP_PRETRAINED=<out> "
              "alone loads it.")
@click.option("--reembed", is_flag=True, help="Then embed the database's reference images with the new model.")
@pass_services
def train_command(services: Services, folder: Path | None, from_database: bool, model_name: str | None,
                  pretrained: str | None, catalog_name: str, minutes: float, films_per_system: int, held_out: float,
                  tune: str, lr: float | None, seed: int, crop: bool, device: str, out: Path, reembed: bool) -> None:
    """Adapt an open_clip image encoder to implant radiographs by metric learning: on a lab's labelled films
    (--folder), on the database's references and approved cases (--from-database), or on rendered films."""
    from raiox.adapters.encoder import EncoderUnavailable
    from raiox.tools.catalog import reembed_catalog
    from raiox.tools.quality import catalog_by_name, database_films, folder_films, train, train_on_films

    if folder is not None and from_database:
        raise click.UsageError("choose --folder or --from-database, not both")
    if not 0 <= held_out < 1:
        raise click.BadParameter("between 0 and 1 (exclusive)", param_hint="--held-out")
    if minutes <= 0:
        raise click.BadParameter("more than 0", param_hint="--minutes")
    if films_per_system < 1:
        raise click.BadParameter("1 or more", param_hint="--films-per-system")
    if folder is not None:
        checked_labelled_folder(folder)
    if folder is not None or from_database:
        films = folder_films(folder) if folder is not None else database_films(services)
        if not films:
            raise click.ClickException(f"no films in {folder if folder is not None else 'the database'}")
        settings = services.settings
        try:
            report = train_on_films(
                films, out, model_name=model_name if model_name is not None else settings.raiox_clip_model,
                pretrained=pretrained if pretrained is not None else settings.raiox_clip_pretrained,
                source=str(folder) if folder is not None else "database", minutes=minutes, held_out=held_out,
                tune=tune, lr=lr, seed=seed, device=device)
        except (EncoderUnavailable, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"trained ({'the head' if report.tuned == 'head' else 'every weight'}) on {report.films} films "
                   f"of {report.systems} systems: {report.steps} steps in {report.seconds / 60:.1f} min")
        for when, result in report.held_out.items():
            click.echo(f"held-out films {when} training ({result['queries']}, matched against the training "
                       f"films): top-1 {result['top1']:.1%}, top-3 {result['top3']:.1%}")
        path = report.out
    else:
        try:
            designs = catalog_by_name(catalog_name)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        path = train(model_name or "raiox-small-rn", designs, out, pretrained=pretrained, minutes=minutes,
                     films_per_system=films_per_system, seed=seed, crop=crop, device=device, lr=lr or 2e-3)
    click.echo(f"wrote {path}; use it with RAIOX_CLIP_PRETRAINED={path} (its sidecar names the architecture)")
    if reembed:
        trained = services.settings.model_copy(update={"raiox_clip_model": "", "raiox_clip_pretrained": str(path)})
        with CommandServices(trained) as retrained:
            click.echo(f"re-embedded {reembed_catalog(retrained)} reference images as {retrained.encoder.model_id}")


@click.command("render-films")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rendered", default="eval48", show_default=True, help="Rendered catalog: `demo` or `eval<N>`.")
@click.option("--skip", default=0, show_default=True, type=click.IntRange(0),
              help="Leave out the catalog's first N systems (12: the demo systems the shipped encoder learned).")
@click.option("--films-per-system", default=4, show_default=True, type=click.IntRange(1, 100))
@click.option("--seeds", type=click.Choice(["reference", "eval"]), default="reference", show_default=True,
              help="`reference`: as eval's references; `eval`: seeds no reference or training film uses.")
@click.option("--manifest", is_flag=True, help="Also write OUT/catalog.jsonl for `raiox catalog import`.")
def render_films_command(out: Path, rendered: str, skip: int, films_per_system: int, seeds: str,
                         manifest: bool) -> None:
    """Rendered films of fictional systems as a lab's labelled folder (OUT/<system>/<n>.png), to try
    `raiox train --folder` and `raiox eval --folder` without real films. Rendered films are not real films."""
    from raiox.tools.quality import catalog_by_name, write_film_folder

    try:
        count = write_film_folder(out, catalog_by_name(rendered), films_per_system=films_per_system, seeds=seeds,
                                  skip=skip, manifest=manifest)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"wrote {count} films to {out}" + (f" and {out / 'catalog.jsonl'}" if manifest else ""))
