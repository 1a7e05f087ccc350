"""`sphere train | evaluate | report`: run the train/evaluate/report flows from the command line.

The config of a run starts from the one stored with the run (when the store has a record),
then the CLI preset, ``--config`` and ``--set`` apply on top (one resolver,
``sphere_core.config.resolve_config``). Flows run on the local ephemeral Prefect API unless
``PREFECT_API_URL`` points at a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.commands.cli_support import ConfigOpt, PresetOpt, SetOpt, out, print_table

if TYPE_CHECKING:
    from sphere_core.config import SphereConfig
    from sphere_core.results import EvaluationResult

RunOpt = Annotated[str | None, typer.Option("--run", help="Run id (see `sphere runs`).")]
RoundOpt = Annotated[int, typer.Option("--round", min=1, help="Round of a multi-round run.")]
EvalFormatOpt = Annotated[str, typer.Option("--format", "-f", help="Output format: table | json.")]
BENCH_HELP = (
    "Comma-separated: gsm8k,math500,aime24,aime22_24,amc23,olympiadbench (default: config)."
)


def run_config(
    run_id: str | None, preset: str | None, config: Path | None, overrides: list[str] | None
):
    """The stored run config (if any) -> preset -> YAML file -> --set, validated once."""
    from flows.run_tracking import flow_config

    return flow_config(str(config) if config else None, preset, overrides, run_id=run_id)


def train(
    run: Annotated[str, typer.Option("--run", help="Run id whose pairs to train on.")],
    round: RoundOpt = 1,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """DPO-train a LoRA adapter on a run's preference pairs (runs/<id>/model/).

    Run it again after a stop or a kill: it resumes from the newest checkpoint.

    A second `sphere train` of the same run and round waits for the first and reuses its result.
    """
    from flows.progress_render import ProgressDisplay
    from flows.train import train_flow

    cfg = run_config(run, preset, config, set_)
    with ProgressDisplay():
        result = train_flow(run_id=run, config=cfg, round=round)
    out.print(f"adapter: {result.adapter_path}", markup=False, highlight=False)
    if result.merged_path:
        out.print(f"merged model: {result.merged_path}", markup=False, highlight=False)
    shown = {
        k: result.metrics[k]
        for k in ("n_train", "n_eval", "train_loss", "best_eval_loss")
        if k in result.metrics
    }
    out.print(f"metrics: {shown}", markup=False, highlight=False)


def evaluate(
    run: RunOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Model dir, .gguf, 'embedded', 'embedded-small' or a LoRA adapter dir."
        ),
    ] = None,
    benchmarks: Annotated[str | None, typer.Option("--benchmarks", "-b", help=BENCH_HELP)] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="First N questions per benchmark.")
    ] = None,
    benchmark_file: Annotated[
        Path | None, typer.Option("--benchmark-file", help="Own question file (jsonl/csv/parquet).")
    ] = None,
    round: RoundOpt = 1,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fmt: EvalFormatOpt = "table",
) -> None:
    """Pass@1 and two-turn self-correction: base vs trained (--run) or one model (--model).

    Base vs trained adds paired statistics per benchmark (docs/evaluation.md): the Pass@1
    difference with a 95% paired-bootstrap CI, the exact McNemar p-value, right->wrong and
    wrong->right counts, and each model's share of answers without a parsable final answer.

    A model already evaluated on the same questions with the same settings is not evaluated
    again: its stored per-item results are reused (a retrained adapter, other weights, questions
    or settings evaluate afresh; so does a model served at a URL). Change evaluation.seed for a
    fresh sample.
    """
    from flows.commands.eval_cmds import check_format
    from flows.evaluate import evaluate_flow
    from flows.progress_render import ProgressDisplay
    from sphere_core.errors import EvaluationError

    check_format(fmt)
    if not run and not model:
        raise EvaluationError("give --run ID (base vs trained) or --model PATH")
    cfg = run_config(
        run, preset, config, _benchmark_overrides(benchmarks, set_)
    )  # benchmark names are validated here
    with ProgressDisplay():
        result = evaluate_flow(
            run_id=run,
            config=cfg,
            model_path=model,
            limit=limit,
            benchmark_file=str(benchmark_file) if benchmark_file else None,
            round=round,
        )
    show_evaluation(result, cfg, fmt)


def _benchmark_overrides(benchmarks: str | None, set_: list[str] | None) -> list[str]:
    """The --set overrides plus ``evaluation.benchmarks`` from a comma-separated --benchmarks."""
    names = [b.strip() for b in benchmarks.split(",") if b.strip()] if benchmarks else []
    return list(set_ or []) + ([f"evaluation.benchmarks=[{', '.join(names)}]"] if names else [])


def show_evaluation(result: EvaluationResult, cfg: SphereConfig, fmt: str) -> None:
    """Print an ``EvaluationResult``: the metrics table and the base-vs-trained statistics, or
    one JSON document (``--format json``)."""
    from flows.commands.eval_cmds import echo_json, evaluation_statistics, print_comparisons

    stats = evaluation_statistics(result, cfg)
    if fmt == "json":
        echo_json(
            {
                "run_id": result.run_id,
                "out_dir": result.out_dir,
                "rows": result.rows,
                "comparisons": [c.as_dict() for c in stats],
            }
        )
        return
    print_evaluation(result.rows)
    print_comparisons(stats, title="Base vs trained")
    out.print(f"per-item outputs: {result.out_dir}", markup=False, highlight=False)


def print_evaluation(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="Evaluation")
    for col in ("model", "benchmark", "n", "Pass@1", "after self-correction", "r→w", "w→r"):
        table.add_column(col)
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        cells.setdefault((r["model_label"], r["benchmark"]), {"n": r["n"]})[r["metric"]] = r[
            "value"
        ]
    for (label, bench), m in cells.items():
        pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"
        num = lambda v: "–" if v is None else str(int(v))
        table.add_row(
            label,
            bench,
            str(m["n"]),
            pct(m.get("pass@1")),
            pct(m.get("self_correction_acc")),
            num(m.get("flips_r2w")),
            num(m.get("flips_w2r")),
        )
    print_table(table)


def report(
    run: Annotated[str, typer.Option("--run", help="Run id to report on.")],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write runs/<id>/report.md with plots (routing, rewards, DPO loss, accuracy)."""
    from flows.report_flow import report_flow

    cfg = run_config(run, preset, config, set_)
    result = report_flow(run_id=run, config=cfg)
    out.print(f"report: {result.path}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("report")(report)
