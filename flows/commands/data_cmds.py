"""`sphere ingest` and `sphere grade`: validate question files, grade prediction files.

Thin: resolves config, calls ``sphere_core.data.ingest`` / ``sphere_core.grading.files`` and
prints a rich summary, or with ``--format json`` a JSON summary as the last stdout line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.commands.cli_support import (
    ConfigOpt,
    PresetOpt,
    SetOpt,
    console,
    out,
    print_table,
    resolve_config,
)

FileArg = Annotated[
    str | None,
    typer.Argument(
        help="Question file (jsonl/json/parquet/csv/HF dir) or builtin:NAME; default data.path."
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Output dir (default $SPHERE_HOME/ingest/<stem>/, or <stem>-<hash>/ when another "
        "input file with the same name already owns that one).",
    ),
]
JsonFormatOpt = Annotated[str, typer.Option("--format", "-f", help="Output format: table | json.")]


def _check_format(fmt: str) -> None:
    from sphere_core.errors import ConfigError

    if fmt not in ("table", "json"):
        raise ConfigError(f"--format must be table or json, got {fmt!r}")


def _print_json(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, default=str))


def ingest(
    file: FileArg = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out_dir: OutOpt = None,
    fmt: JsonFormatOpt = "table",
) -> None:
    """Validate a question file: write accepted questions and rejected rows (with reasons)."""
    from sphere_core.data.ingest import default_ingest_dir, ingest_file, write_ingest
    from sphere_core.errors import InputDataError
    from sphere_core.paths import sphere_home, writable_dir

    _check_format(fmt)
    cfg = resolve_config(preset, config, set_)
    source = file or cfg.data.path
    target = writable_dir(out_dir, "--out") if out_dir else None  # fail before the work
    result = ingest_file(source, cfg.data)
    home = sphere_home(cfg.storage.home)
    paths = write_ingest(result, target or default_ingest_dir(home, source))
    summary = {
        "accepted": result.stats["accepted"],
        "rejected": result.stats["rejected"],
        "duplicates": result.stats["duplicates"],
        "duplicate_source_ids": result.stats["duplicate_source_ids"],
        "total_rows": result.stats["total_rows"],
        "source": result.stats["source"],
        "out_dir": str(paths["questions_file"].parent),
        "questions_file": str(paths["questions_file"]),
        "rejects_file": str(paths["rejects_file"]),
    }
    if fmt == "json":
        _print_json(summary)
    else:
        _ingest_table(source, summary, result.rejects, paths["rejects_jsonl"])
    if summary["accepted"] == 0:
        raise InputDataError(
            f"{source}: no row accepted ({summary['rejected']} rejected, "
            f"{summary['duplicates']} duplicates); see {paths['rejects_jsonl']}"
        )


def _ingest_table(source: str, summary: dict[str, Any], rejects, rejects_jsonl: Path) -> None:
    from rich.table import Table

    table = Table(title=f"ingest {source}", show_header=False)
    for key in (
        "source",
        "total_rows",
        "accepted",
        "rejected",
        "duplicates",
        "duplicate_source_ids",
        "out_dir",
        "questions_file",
        "rejects_file",
    ):
        table.add_row(key, str(summary[key]))
    print_table(table)
    if len(rejects):
        reasons = Table(title="rejected rows")
        reasons.add_column("row", justify="right")
        reasons.add_column("reason")
        for rec in rejects.head(10).to_dict(orient="records"):
            reasons.add_row(str(rec["row"]), rec["reason"])
        if len(rejects) > 10:
            reasons.add_row("…", f"{len(rejects) - 10} more")
        out.print(reasons)
        out.print(
            f"rows are numbered from 1 (a header row is not counted); all rejected rows: "
            f"{rejects_jsonl}",
            soft_wrap=True,
        )


def grade(
    file: Annotated[
        Path, typer.Argument(help="JSONL with `prediction`, `answer` (optional `id`) per row.")
    ],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Graded file (default FILE.graded.jsonl).")
    ] = None,
    fmt: JsonFormatOpt = "table",
) -> None:
    """Extract final answers from predictions and verify them against gold answers."""
    from rich.progress import Progress

    from sphere_core.errors import GradingError
    from sphere_core.grading import get_grader, grade_file
    from sphere_core.paths import writable_dir

    _check_format(fmt)
    cfg = resolve_config(preset, config, set_)
    if output is not None:  # a graded file: its folder must be writable (one-line error, exit 3)
        writable_dir(output.parent, "--out folder")
    grader = get_grader(cfg.grading)  # process-wide; its workers stop at exit
    with Progress(console=console, transient=True, disable=fmt == "json") as bar:
        task = bar.add_task("grading", total=None)
        result = grade_file(file, grader, output, progress=lambda n: bar.advance(task, n))
    summary = {**result.summary(), "timeout_s": grader.timeout_s}
    if fmt == "json":
        _print_json(summary)
    else:
        for err in result.errors[:10]:
            console.print(f"[yellow]row {err['row']}: {err['reason']}[/yellow]")
        if len(result.errors) > 10:
            console.print(f"[yellow]… {len(result.errors) - 10} more rows with errors[/yellow]")
        acc = "n/a" if result.accuracy is None else f"{result.accuracy:.1%}"
        out.print(
            f"accuracy {acc} ({result.correct}/{result.graded} graded; "
            f"{len(result.errors)} errors, "
            f"{result.timeouts} timed out after {grader.timeout_s:g}s each; "
            f"{result.elapsed_s:.1f}s elapsed) -> {result.graded_file}"
        )
    if result.graded == 0:
        raise GradingError(f"{file}: no gradable rows ({len(result.errors)} errors)")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("grade")(grade)
