"""`raiox bench pipeline`: webhook-to-ready time and embed cold start, each against its baseline."""

from __future__ import annotations

import json

import click


@click.command("pipeline")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
@click.option("--submissions", default=20, show_default=True, type=click.IntRange(1, 500),
              help="Submissions timed from webhook to `ready`, one at a time.")
@click.option("--model", default="raiox-tiny-vit", show_default=True, help="open_clip model of dev, worker and match.")
@click.option("--pretrained", default=None, help="Its weights (tag or path); default: seeded random (speed only).")
@click.option("--cold-runs", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Fresh `raiox match` processes timed.")
def bench_pipeline_command(as_json: bool, submissions: int, model: str, pretrained: str | None,
                           cold_runs: int) -> None:
    """Webhook-to-ready p50/p99 through `raiox dev` + a worker vs the webhook ack alone; embed cold start
    (process start to first result of `raiox match`) vs a warm match in one process."""
    from raiox.tools.bench import bench_pipeline

    report = bench_pipeline(submissions=submissions, model=model, pretrained=pretrained, cold_runs=cold_runs)
    if as_json:
        click.echo(json.dumps(report))
        return
    flow, cold = report["webhook_to_ready"], report["cold_start"]
    click.echo(f"{report['model_id']} on {report['device']}, {flow['submissions']} films of 1024x1280, "
               f"{flow['server']}")
    click.echo(f"{'':<28} {'p50 ms':>9} {'p99 ms':>9}")
    click.echo(f"{'webhook ack (baseline)':<28} {flow['ack']['p50_ms']:>9} {flow['ack']['p99_ms']:>9}")
    click.echo(f"{'webhook to ready':<28} {flow['ready']['p50_ms']:>9} {flow['ready']['p99_ms']:>9}  "
               f"x{flow['ready_over_ack_p50']} the ack")
    click.echo(f"cold start (fresh `raiox match`, median of {cold['runs']}): {cold['process_to_first_result_s']} s; "
               f"warm match p50 {cold['warm_match_p50_ms']} ms (x{cold['cold_over_warm']})")
