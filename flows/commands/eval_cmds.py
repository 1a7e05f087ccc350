"""`sphere compare`: the trained models of two runs (and each with its base) on the questions
both evaluated, with paired statistics; plus the statistics table `sphere evaluate` prints.

Statistics (``sphere_core.evaluation.paired_stats``): Pass@1 of both models, the difference
with a paired-bootstrap CI (``evaluation.bootstrap_samples``, ``evaluation.bootstrap_seed``),
the exact McNemar p-value, right->wrong / wrong->right counts and each model's share of
answers without a parsable final answer. Reads files only: no Prefect, no models.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import click
import typer

from flows.commands.cli_support import ConfigOpt, PresetOpt, SetOpt, print_table

FORMATS = ("table", "json")
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Output format: table | json.")]


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise click.UsageError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return fmt


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def comparison_cells(c: Any) -> list[str]:
    """Table cells of one ``PairedComparison`` (see :data:`COLUMNS`)."""
    from sphere_core.evaluation.paired_stats import format_diff_ci, format_p

    return [
        c.benchmark,
        c.label_a,
        c.label_b,
        str(c.n),
        _pct(c.pass_a),
        _pct(c.pass_b),
        format_diff_ci(c),
        format_p(c.p_mcnemar),
        str(c.right_to_wrong),
        str(c.wrong_to_right),
        _pct(c.format_fail_a),
        _pct(c.format_fail_b),
    ]


COLUMNS = (
    "benchmark",
    "A",
    "B",
    "n",
    "Pass@1 A",
    "Pass@1 B",
    "B−A pp [CI]",
    "McNemar p",
    "r→w",
    "w→r",
    "no answer A",
    "no answer B",
)


def print_comparisons(comparisons: list, title: str) -> None:
    """A table of paired comparisons, with a caption saying what the numbers are."""
    from rich.table import Table

    if not comparisons:
        return
    first = comparisons[0]
    caption = (
        f"paired over the questions both answered; CI: {first.level:.0%} paired bootstrap, "
        f"{first.n_boot} resamples, seed {first.seed}; McNemar: exact, two-sided; "
        "r→w: A right, B wrong; no answer: no parsable final answer"
    )
    table = Table(title=title, caption=caption)
    for col in COLUMNS:
        table.add_column(col, no_wrap=col in ("benchmark", "B−A pp [CI]"))
    for c in comparisons:
        table.add_row(*comparison_cells(c))
    print_table(table)


def evaluation_statistics(result: Any, cfg: Any) -> list:
    """Base vs trained on the benchmarks an ``EvaluationResult`` covers (empty without both)."""
    from pathlib import Path

    from sphere_core.evaluation.compare import base_vs_trained

    benchmarks = list(dict.fromkeys(r["benchmark"] for r in result.rows))
    ev = cfg.evaluation
    return base_vs_trained(
        Path(result.out_dir), benchmarks, n_boot=ev.bootstrap_samples, seed=ev.bootstrap_seed
    )


def echo_json(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


def compare(
    run_a: Annotated[str, typer.Argument(help="Run id of model A (e.g. the SPHERE-trained run).")],
    run_b: Annotated[
        str, typer.Argument(help="Run id of model B (e.g. the sampling-trained run).")
    ],
    round: Annotated[int, typer.Option("--round", min=1, help="Round of both runs.")] = 1,
    fmt: FormatOpt = "table",
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Trained model of RUN_A vs that of RUN_B, and each run's base vs its trained model.

    Reads the evaluations on disk (`sphere evaluate --run`); pairs the questions both answered.

    Exit 1: unknown run, no evaluation of a trained model, no common question. Exit 2: usage.
    """
    from sphere_core.config import resolve_config
    from sphere_core.evaluation.compare import compare_runs
    from sphere_core.paths import sphere_home

    check_format(fmt)
    cfg = resolve_config(preset, config, set_)
    ev = cfg.evaluation
    comparisons = compare_runs(
        sphere_home(cfg.storage.home),
        run_a,
        run_b,
        round,
        n_boot=ev.bootstrap_samples,
        seed=ev.bootstrap_seed,
    )
    if fmt == "json":
        echo_json(
            {
                "run_a": run_a,
                "run_b": run_b,
                "round": round,
                "comparisons": [c.as_dict() for c in comparisons],
            }
        )
        return
    print_comparisons(comparisons, title=f"{run_a} vs {run_b} (round {round})")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
