"""`sphere run | generate | resume`: start the Prefect flows from the command line and print
what they return.

Flows run in-process on the local ephemeral Prefect API unless ``PREFECT_API_URL`` points at
a server. Progress comes from the library's progress events (``sphere_core.progress``),
rendered by ``flows.progress_render``: bars on a terminal, one line per event in a log file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from flows.commands.cli_support import (
    ConfigOpt,
    PresetOpt,
    SetOpt,
    out,
    print_table,
    resolve_config,
)

RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="Run id (default: a new one).")]
RunnerOpt = Annotated[
    str | None, typer.Option("--task-runner", help="Shard task runner: thread | ray.")
]
RoundsOpt = Annotated[
    int | None,
    typer.Option(
        "--rounds",
        min=1,
        help="Self-evolution rounds (evolution.rounds): round r searches "
        "with the model trained in round r-1.",
    ),
]


def _overrides(
    set_: list[str] | None, task_runner: str | None, rounds: int | None = None
) -> list[str]:
    extra = [f"orchestration.task_runner={task_runner}"] if task_runner else []
    extra += [f"evolution.rounds={rounds}"] if rounds else []
    return list(set_ or []) + extra


def _run_flow(flow_fn: Callable[..., Any], cfg: Any, run_id: str) -> Any:
    from flows.commands.cli_support import announce_run
    from flows.progress_render import ProgressDisplay

    announce_run(run_id)
    with ProgressDisplay():
        return flow_fn(run_id=run_id, config=cfg)


def print_generate(result: Any, home: Any) -> None:
    """The routing summary (the paper's Table-5 view) of one generate round."""
    from sphere_core.storage.run_view import RunView
    from sphere_core.summary import summary_table

    view = RunView(home, result.run_id, result.round)
    print_table(
        summary_table(
            view.routing(),
            view.pairs(),
            trees=view.tree(),
            title=f"SPHERE preference data (round {result.round})",
        )
    )
    if result.dropped_pairs:
        out.print(
            f"{len(result.dropped_pairs)} pair candidate(s) dropped (invariants): "
            + "; ".join(sorted({d["reason"] for d in result.dropped_pairs})),
            markup=False,
            highlight=False,
        )
    out.print(f"pairs: {view.pairs_path('train').parent}", markup=False, highlight=False)
    if result.error_note:
        out.print(f"round {result.round}: {result.error_note}", markup=False, highlight=False)


def print_pipeline(result: Any, home: Any) -> None:
    for r in result.rounds:
        print_generate(r.generate, home)
        if r.train.skipped:
            out.print(
                f"round {r.round}: DPO skipped: {r.train.skipped}", markup=False, highlight=False
            )
        else:
            loss = r.train.metrics.get("train_loss")
            out.print(
                f"round {r.round}: adapter {r.train.adapter_path}"
                + (f" (train loss {loss:.4f})" if isinstance(loss, float) else ""),
                markup=False,
                highlight=False,
            )
        if r.evaluate is not None:
            from flows.commands.train_cmds import print_evaluation

            print_evaluation(r.evaluate.rows)
    if result.report is not None:
        out.print(f"report: {result.report.path}", markup=False, highlight=False)


def run(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run_id: RunIdOpt = None,
    task_runner: RunnerOpt = None,
    rounds: RoundsOpt = None,
) -> None:
    """Run the whole pipeline (per round: generate -> DPO -> evaluate; then the report)."""
    from flows.pipeline import pipeline_flow
    from flows.run_tracking import flow_run_id, home_for

    cfg = resolve_config(preset, config, _overrides(set_, task_runner, rounds))
    run_id = flow_run_id(run_id)
    result = _run_flow(pipeline_flow, cfg, run_id)
    print_pipeline(result, home_for(cfg))
    out.print(f"run {run_id} completed", markup=False, highlight=False)


def generate(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run_id: RunIdOpt = None,
    task_runner: RunnerOpt = None,
) -> None:
    """Generate preference pairs (ingest, search, routing, pairs); prints the routing summary."""
    from flows.generate import generate_flow
    from flows.run_tracking import flow_run_id, home_for

    cfg = resolve_config(preset, config, _overrides(set_, task_runner))
    run_id = flow_run_id(run_id)
    print_generate(_run_flow(generate_flow, cfg, run_id), home_for(cfg))


def resume(run_id: Annotated[str, typer.Argument(help="The run to resume.")]) -> None:
    """Re-run a run with its stored config; finished shards, pairs and models are reused."""
    from flows.generate import generate_flow
    from flows.pipeline import pipeline_flow
    from flows.run_tracking import flow_run_id, home_for
    from sphere_core.errors import RunNotFoundError
    from sphere_core.storage.run_records import open_store

    run_id = flow_run_id(run_id)
    defaults = resolve_config()
    with open_store(defaults, home_for(defaults)) as repo:
        record = repo.get_run(run_id)
    if record is None:
        raise RunNotFoundError(f"no run {run_id!r} in the metadata store (see `sphere runs`)")
    cfg = resolve_config(base=record["config"])
    if (record.get("kind") or "pipeline") == "generate":
        print_generate(_run_flow(generate_flow, cfg, run_id), home_for(cfg))
    else:
        print_pipeline(_run_flow(pipeline_flow, cfg, run_id), home_for(cfg))
    out.print(f"run {run_id} completed", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("generate")(generate)
    app.command("resume")(resume)
