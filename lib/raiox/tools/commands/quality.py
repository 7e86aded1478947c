"""Commands for identification quality: `raiox eval`, `raiox train`, `raiox render-films`, `raiox render-cache`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from raiox.services import Services
from raiox.tools.commands.common import (
    CommandServices,
    checked_labelled_folder,
    loaded_encoder,
    pass_services,
    require_references,
)


def _report_lines(report: Any) -> list[str]:
    suggestion = (f"; RAIOX_LOW_CONFIDENCE_MARGIN={report.suggested_low_confidence_margin:.4f} would flag "
                  f"{report.flagged_at_suggested_margin:.1%} of answers and 80% of the wrong ones"
                  if report.top1 < 1 else "")
    lines = [f"{report.name} [{report.model_id}] on {report.renderer} films: {report.systems} systems, "
             f"{report.queries} new films — top-1 {report.top1:.1%}, top-3 {report.top3:.1%}, low confidence "
             f"{report.low_confidence_rate:.1%}" + suggestion]
    found = report.segmentation
    if "all" in found:
        lines.append(f"    implant found on {found['all']['found']:.1%} of the new films, platform up on "
                     f"{found['all']['platform_up']:.1%} of those")
    for tag, result in report.slices.items():
        where = (f"; implant found {found[tag]['found']:.1%}, platform up {found[tag]['platform_up']:.1%}"
                 if tag in found else "")
        lines.append(f"    {tag}: {result['queries']} films, top-1 {result['top1']:.1%}, top-3 {result['top3']:.1%}"
                     + where)
    mistakes = {truth: {p: n for p, n in row.items() if p != truth} for truth, row in report.confusion.items()}
    worst = sorted(((sum(m.values()), t, m) for t, m in mistakes.items() if m), reverse=True)[:3]
    for count, truth, predicted in worst:
        lines.append(f"    {truth}: {count} wrong top-1 ({', '.join(f'{p} x{n}' for p, n in predicted.items())})")
    return lines


@click.command("eval")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--rendered", default="heldout200", show_default=True,
              help="Rendered systems: `heldout<N>` (N systems no training set contains, any two visibly different) "
              "or `demo` (the 12 demo systems).")
@click.option("--renderer", type=click.Choice(["flat", "drr", "silhouette", "both", "all"]), default="both",
              show_default=True,
              help="Film generator: `flat` (the one the shipped encoder was mostly trained on), `drr` (written "
              "independently: a 3-D model projected as a radiograph), `silhouette` (a third, written apart from "
              "both and never trained on: validation only), `both` (flat and drr in turn) or `all` (every one).")
@click.option("--references", default=4, show_default=True, type=click.IntRange(1, 50),
              help="Reference films per system (the catalog).")
@click.option("--queries", default=6, show_default=True, type=click.IntRange(1, 50),
              help="New films per system, at other sizes than the references where the system has them.")
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Instead: a labelled folder of films, FOLDER/<system>/<film> (one sub-folder per system, named "
              "as in the catalog), matched against the catalog in the database through the production query.")
@click.option("--descriptor/--no-descriptor", default=True, show_default=True,
              help="Also evaluate the measured descriptor alone, in the same run.")
@click.option("--previous", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Also evaluate another checkpoint on the same films: a shape encoder (e.g. the one shipped before "
              "this one) or a whole-film open_clip checkpoint with a sidecar, such as the encoder Raiox shipped "
              "before identifying by shape (docs/quality.md says how to get either).")
@click.option("--approvals", default=0, show_default=True, type=click.IntRange(0),
              help="Also measure learning from approvals: this many approved films become references of the "
              "weakest quarter of systems, whose accuracy is shown before and after.")
@pass_services
def eval_command(services: Services, as_json: bool, rendered: str, renderer: str, references: int, queries: int,
                 folder: Path | None, descriptor: bool, previous: Path | None, approvals: int) -> None:
    """Top-1 and top-3 accuracy of the configured identifier (RAIOX_CLIP_MODEL / RAIOX_CLIP_PRETRAINED), overall
    and per slice of films (upper jaw, crown, abutment, two implants, photographed, turned 180°)."""
    from raiox.tools.quality import (
        approvals_effect,
        evaluate,
        evaluate_folder,
        identifier_embedder,
        rendered_set,
        renderers_named,
        segmentation,
        systems_by_name,
    )

    # Inputs first: loading the encoder takes seconds.
    if folder is not None:
        checked_labelled_folder(folder)
        require_references(services)
    else:
        try:
            designs = systems_by_name(rendered)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rendered") from None
    identifier = loaded_encoder(services)
    learning = None
    if folder is not None:
        reports = [evaluate_folder(services, folder)]
    else:
        identified: dict[int, Any] = {}
        contenders: list[tuple[str, str, Any, Any]] = [("identifier", identifier.model_id,
                                                         *identifier_embedder(identifier, seen=identified))]
        if descriptor and identifier.model.kind == "shape":
            from raiox.shape.identifier import ShapeIdentifier

            alone = ShapeIdentifier(identifier.model, descriptor_weight=1.0)
            contenders.append(("descriptor alone", "descriptor", *identifier_embedder(alone)))
        if previous is not None:
            contenders.append(_previous_contender(previous, identifier))
        reports = []
        for generator in renderers_named(renderer):
            films = rendered_set(designs, generator, references=references, queries=queries,
                                 progress=not as_json)
            identified.clear()
            for name, model_id, embed_references, embed_queries in contenders:
                reports.append(evaluate(name, model_id, films, embed_references, embed_queries))
            reports[-len(contenders)].segmentation = segmentation(films, identified)
            if approvals and learning is None:
                base = reports[-len(contenders)]
                learning = approvals_effect("identifier", identifier.model_id, films, designs, base,
                                            *contenders[0][2:], approvals=approvals)
    if as_json:
        click.echo(json.dumps({"results": [r.as_dict() for r in reports],
                               **({"learning_from_approvals": learning} if learning else {})}))
        return
    for report in reports:
        click.echo("\n".join(_report_lines(report)))
    if learning:
        click.echo(f"learning from approvals ({learning['approvals_per_system']} per system, "
                   f"{len(learning['systems'])} weakest systems): top-1 {learning['before']['top1']:.1%} -> "
                   f"{learning['after']['top1']:.1%}, top-3 {learning['before']['top3']:.1%} -> "
                   f"{learning['after']['top3']:.1%}")


@click.command("train")
@click.option("--cache", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Train the shape encoder from scratch on a cache of rendered crops (`raiox render-cache`).")
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Fine-tune on a lab's labelled films, <system>/<film> (as `raiox eval --folder` reads them).")
@click.option("--from-database", "from_database", is_flag=True,
              help="Fine-tune on the catalog's reference images and approved cases' films.")
@click.option("--average", "averaged", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Instead of training: OUT is the mean of these shape encoders' weights (repeat the option; "
              "runs on from one start, as docs/quality.md's run 8).")
@click.option("--pretrained", default=None,
              help="The shape encoder to start from [--folder/--from-database: the configured one, "
              "RAIOX_CLIP_PRETRAINED, `shipped` by default; --cache: none, random weights].")
@click.option("--config", "config_name", default="raiox-shape-s", show_default=True,
              help="--cache: the architecture (lib/raiox/shape/shape_configs/).")
@click.option("--steps", default=12000, show_default=True, type=click.IntRange(1),
              help="--cache: the learning-rate schedule's length; a run stopped early resumes from OUT.ckpt.")
@click.option("--minutes", default=None, type=float,
              help="Time budget [--cache: none, run the schedule; --folder/--from-database: 8].")
@click.option("--held-out", "held_out", default=0.25, show_default=True,
              help="--folder/--from-database: share of each system's films (never its last) left out of training "
              "and matched against the rest before and after, to report what training did (worse after: the "
              "command fails and does not re-embed); 0 trains on all.")
@click.option("--lr", default=None, type=float, help="Peak learning rate [--cache: 2e-3; fine-tuning: 2e-4].")
@click.option("--mix", default=None, type=click.FloatRange(0, 1, min_open=True),
              help="--folder/--from-database: how far the result goes from the starting encoder towards the "
              "fine-tuned weights (1: all the way) [0.3].")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write; its .json sidecar names the architecture, so RAIOX_CLIP_PRETRAINED=<out> "
              "alone loads it.")
@click.option("--reembed", is_flag=True, help="Then embed the database's reference images with the new model.")
@pass_services
def train_command(services: Services, cache: Path | None, folder: Path | None, from_database: bool,
                  averaged: tuple[Path, ...], pretrained: str | None, config_name: str, steps: int,
                  minutes: float | None, held_out: float, lr: float | None, mix: float | None, seed: int,
                  out: Path, reembed: bool) -> None:
    """Train the shape encoder on rendered crops (--cache; from scratch, or on from --pretrained), or fine-tune
    it on a lab's labelled films (--folder) or the database's references and approved cases (--from-database), or
    average trained ones (--average)."""
    from raiox.shape import network
    from raiox.shape.identifier import SHIPPED, SHIPPED_SHAPE_ENCODER
    from raiox.tools.catalog import reembed_catalog
    from raiox.tools.shape_train import (
        FINE_TUNING_LR,
        FINE_TUNING_MIX,
        ShapeTraining,
        average_checkpoints,
        fine_tune_on_films,
        train_shape,
    )

    if sum([cache is not None, folder is not None, from_database, bool(averaged)]) != 1:
        raise click.UsageError("choose one of --cache, --folder, --from-database or --average")
    if not 0 <= held_out < 1:
        raise click.BadParameter("between 0 and 1 (exclusive)", param_hint="--held-out")
    if minutes is not None and minutes <= 0:
        raise click.BadParameter("more than 0", param_hint="--minutes")
    if folder is not None:
        checked_labelled_folder(folder)
    if averaged:
        for path in averaged:
            if not network.is_shape_checkpoint(path):
                raise click.BadParameter(f"{path} is not a shape encoder checkpoint", param_hint="--average")
        if len({network.checkpoint_config(path) for path in averaged}) > 1:
            raise click.BadParameter("the checkpoints are of different architectures", param_hint="--average")
        average_checkpoints(averaged, out)
        click.echo(f"averaged the weights of {len(averaged)} shape encoders")
    elif cache is not None:
        if config_name not in network.config_names():
            raise click.BadParameter(f"one of {', '.join(network.config_names())}", param_hint="--config")
        init = None
        if pretrained is not None:
            init = SHIPPED_SHAPE_ENCODER if pretrained.strip() in ("", SHIPPED) else Path(pretrained)
            if not network.is_shape_checkpoint(init):
                raise click.BadParameter(f"{pretrained} is not a shape encoder checkpoint", param_hint="--pretrained")
            if network.checkpoint_config(init) != network.ShapeNetConfig.named(config_name):
                raise click.BadParameter(f"{pretrained} is another architecture than --config {config_name}; name its "
                                         "own (its .json sidecar says which)", param_hint="--pretrained")
        line = train_shape(ShapeTraining(cache=cache, out=out, config=config_name, steps=steps, minutes=minutes,
                                         lr=lr or 2e-3, seed=seed, init=init))
        click.echo(f"step {line.get('step')}: validation top-1 {line.get('val_top1', 0):.1%}, "
                   f"top-3 {line.get('val_top3', 0):.1%}")
    else:
        from raiox.tools.quality import database_films, folder_films

        start = pretrained if pretrained is not None else services.settings.raiox_clip_pretrained
        start_path = SHIPPED_SHAPE_ENCODER if start.strip() in ("", SHIPPED) else Path(start)
        if not network.is_shape_checkpoint(start_path):
            raise click.BadParameter(f"{start} is not a shape encoder checkpoint (fine-tuning trains the shape "
                                     "encoder; open_clip models are used as they are)", param_hint="--pretrained")
        films = folder_films(folder) if folder is not None else database_films(services)
        if not films:
            raise click.ClickException(f"no films in {folder if folder is not None else 'the database'}")
        try:
            report = fine_tune_on_films(films, out, start=start_path,
                                        source=str(folder) if folder is not None else "database",
                                        minutes=minutes if minutes is not None else 8.0, held_out=held_out,
                                        lr=lr or FINE_TUNING_LR, mix=mix or FINE_TUNING_MIX, seed=seed,
                                        descriptor_weight=services.settings.raiox_descriptor_weight)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"fine-tuned on {report.films} films of {report.systems} systems: {report.steps} steps in "
                   f"{report.seconds / 60:.1f} min")
        for when, result in report.held_out.items():
            click.echo(f"held-out films {when} training ({result['queries']}, matched against the training "
                       f"films): top-1 {result['top1']:.1%}, top-3 {result['top3']:.1%}")
        if report.harmed:
            raise click.ClickException(
                f"training made the held-out films match worse: keep the current encoder. {out} is written only to "
                f"be looked at{', and the catalog was not re-embedded' if reembed else ''}; more films per system, "
                "a smaller --mix or a smaller --lr may do better")
    click.echo(f"wrote {out}; use it with RAIOX_CLIP_PRETRAINED={out} (its sidecar names the architecture)")
    if reembed:
        trained = services.settings.model_copy(update={"raiox_clip_model": "", "raiox_clip_pretrained": str(out)})
        with CommandServices(trained) as retrained:
            click.echo(f"re-embedded {reembed_catalog(retrained)} reference images as {retrained.encoder.model_id}")


@click.command("render-films")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rendered", default="heldout40", show_default=True,
              help="Rendered systems: `heldout<N>` or `demo`.")
@click.option("--renderer", type=click.Choice(["flat", "drr", "silhouette"]), default="flat", show_default=True,
              help="Film generator (`silhouette` is never trained on: a lab's folder of looks the encoder never saw).")
@click.option("--skip", default=0, show_default=True, type=click.IntRange(0), help="Leave out the first N systems.")
@click.option("--films-per-system", default=4, show_default=True, type=click.IntRange(1, 100))
@click.option("--seeds", type=click.Choice(["reference", "eval"]), default="reference", show_default=True,
              help="`reference`: as eval's references, at the system's reference sizes; `eval`: other seeds and "
              "other sizes, as eval's new films.")
@click.option("--manifest", is_flag=True, help="Also write OUT/catalog.jsonl for `raiox catalog import`.")
def render_films_command(out: Path, rendered: str, renderer: str, skip: int, films_per_system: int, seeds: str,
                         manifest: bool) -> None:
    """Rendered films of fictional systems as a lab's labelled folder (OUT/<system>/<n>.png), to try
    `raiox train --folder` and `raiox eval --folder` without real films. Rendered films are not real films."""
    from raiox.tools.quality import systems_by_name, write_film_folder

    try:
        count = write_film_folder(out, systems_by_name(rendered), films_per_system=films_per_system, seeds=seeds,
                                  renderer=renderer, skip=skip, manifest=manifest)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"wrote {count} films to {out}" + (f" and {out / 'catalog.jsonl'}" if manifest else ""))


def _previous_contender(previous: Path, identifier: Any) -> tuple[str, str, Any, Any]:
    """`--previous`: a shape encoder identifies as the configured one does (same finder and descriptor weight);
    an open_clip checkpoint embeds the whole film, as Raiox matched before identifying by shape."""
    from raiox.adapters.encoder import Encoder, EncoderUnavailable, resolve_weights
    from raiox.shape import network
    from raiox.shape.identifier import ShapeIdentifier
    from raiox.tools.quality import identifier_embedder, whole_film_embedder

    try:
        if network.is_shape_checkpoint(previous):
            other = ShapeIdentifier.load("", str(previous), device=identifier.device,
                                         descriptor_weight=identifier.descriptor_weight)
            return ("previous (shape encoder)", other.model_id, *identifier_embedder(other))
        encoder = Encoder.load(*resolve_weights("", str(previous)), device=identifier.device)
    except EncoderUnavailable as exc:
        raise click.BadParameter(str(exc), param_hint="--previous") from None
    return ("previous (whole film)", encoder.model_id, *whole_film_embedder(encoder))


@click.command("render-cache")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--renderer", type=click.Choice(["flat", "drr"]), default="flat", show_default=True)
@click.option("--systems", default=2500, show_default=True, type=click.IntRange(2),
              help="Random training systems (drawn from seeds no held-out set uses).")
@click.option("--films-per-system", default=8, show_default=True, type=click.IntRange(2))
@click.option("--seed", default=1, show_default=True, help="Render seeds of this cache.")
@click.option("--workers", default=None, type=int, help="Processes [every core].")
def render_cache_command(out: Path, renderer: str, systems: int, films_per_system: int, seed: int,
                         workers: int | None) -> None:
    """Render training films once into OUT (outside git): each film's implant as the canonicaliser crops it,
    for `raiox train --cache`. Resumes where an interrupted run stopped; another renderer, seed or number of
    films adds its films beside those already in OUT."""
    from raiox.tools.implant_designs import random_systems
    from raiox.tools.quality import TRAIN_SYSTEMS_SEED
    from raiox.tools.shape_data import build_cache

    designs = random_systems(systems, seed=TRAIN_SYSTEMS_SEED, prefix="Train")
    count = build_cache(out, designs, films_per_system=films_per_system, renderer=renderer, seed=seed,
                        workers=workers)
    click.echo(f"{count} {renderer} films of {systems} systems cached in {out}")
