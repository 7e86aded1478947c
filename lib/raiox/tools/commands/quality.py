"""Commands for identification quality: `raiox eval` and `raiox train`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from raiox.adapters.encoder import Encoder, random_model
from raiox.services import Services
from raiox.tools.commands.common import loaded_encoder, pass_services


def _untrained_like(encoder: Encoder) -> Encoder:
    """The same architecture with random weights (seed 0): the baseline every eval reports beside."""
    return Encoder.from_model(random_model(encoder.model_name), model_name=encoder.model_name, random_weights=True,
                              crop=encoder.crop, batch_size=encoder.batch_size)


@click.command("eval")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--rendered", default="eval48", show_default=True,
              help="Rendered set: `demo` (12 systems) or `eval<N>`; queries use seeds never used in training.")
@click.option("--queries", default=5, show_default=True, help="Rendered queries per system.")
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Instead: a labelled folder of films (<system>/<file>), matched against the catalog in the "
              "database through the production query.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also evaluate the untrained architecture in the same run.")
@click.option("--approvals", default=0, show_default=True,
              help="Also measure learning from approvals: this many approved films become references of the "
              "weakest quarter of systems, whose accuracy is shown before and after.")
@pass_services
def eval_command(services: Services, as_json: bool, rendered: str, queries: int, folder: Path | None,
                 baseline: bool, approvals: int) -> None:
    """Top-1 and top-3 accuracy of the configured encoder (RAIOX_CLIP_MODEL / RAIOX_CLIP_PRETRAINED)."""
    from raiox.tools.quality import approvals_effect, catalog_by_name, evaluate, evaluate_folder

    encoder = loaded_encoder(services)
    learning = None
    if folder is not None:
        reports = [evaluate_folder(services, folder)]
    else:
        try:
            designs = catalog_by_name(rendered)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
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
        click.echo(f"{report.model_id}: {report.systems} systems, {report.queries} queries — top-1 "
                   f"{report.top1:.1%}, top-3 {report.top3:.1%}, low confidence {report.low_confidence_rate:.1%}; "
                   f"RAIOX_LOW_CONFIDENCE_MARGIN={report.suggested_low_confidence_margin:.4f} would flag "
                   f"{report.flagged_at_suggested_margin:.1%} of answers and 80% of the wrong ones")
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
@click.option("--model", "model_name", default="raiox-small-rn", show_default=True,
              help="open_clip architecture (ViT-B-32 with --pretrained in production).")
@click.option("--pretrained", default=None, help="Start from these weights (tag or checkpoint); default: scratch.")
@click.option("--catalog", "catalog_name", default="eval48", show_default=True,
              help="Rendered systems to learn: `demo` or `eval<N>`.")
@click.option("--minutes", default=10.0, show_default=True, help="Time budget, rendering included.")
@click.option("--films-per-system", default=200, show_default=True,
              help="Training films rendered per system before training starts.")
@click.option("--seed", default=0, show_default=True)
@click.option("--crop/--no-crop", default=False, show_default=True,
              help="Crop films to the implant first (on rendered films it lowered accuracy; docs/benchmarks.md).")
@click.option("--device", default="auto", show_default=True, help="`auto` (CUDA when present), `cpu` or `cuda`.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write (a .json sidecar records how films were prepared).")
@click.option("--reembed", is_flag=True, help="Then embed the database's reference images with the new model.")
@pass_services
def train_command(services: Services, model_name: str, pretrained: str | None, catalog_name: str, minutes: float,
                  films_per_system: int, seed: int, crop: bool, device: str, out: Path, reembed: bool) -> None:
    """Adapt an open_clip image encoder to implant radiographs by metric learning on rendered films."""
    from raiox.tools.catalog import reembed_catalog
    from raiox.tools.quality import catalog_by_name, train

    path = train(model_name, catalog_by_name(catalog_name), out, pretrained=pretrained, minutes=minutes,
                 films_per_system=films_per_system, seed=seed, crop=crop, device=device)
    click.echo(f"wrote {path}; use it with RAIOX_CLIP_MODEL={model_name} RAIOX_CLIP_PRETRAINED={path}")
    if reembed:
        trained = services.settings.model_copy(update={"raiox_clip_model": model_name,
                                                       "raiox_clip_pretrained": str(path)})
        with Services(trained) as retrained:
            click.echo(f"re-embedded {reembed_catalog(retrained)} reference images as {retrained.encoder.model_id}")
