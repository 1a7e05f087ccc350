"""`sphere runs`, `sphere routes`, `sphere calibration`, `sphere db upgrade|current`: read the
metadata store (and, for ``calibration``, a run's tree and routing tables).

Thin: opens the repository (``sphere_core.storage.repo``), formats rows as a rich table,
JSON (the only thing on stdout) or CSV. SQLAlchemy/Alembic are imported inside commands.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

import click
import typer

from flows.commands.cli_support import FormatOpt, print_table

DbUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (default: $SPHERE_DATABASE_URL, else SQLite in $SPHERE_HOME).",
    ),
]
FORMATS = ("table", "json", "csv")
_NO_WRAP = {
    "run_id",
    "question_id",
    "stage",
    "decision",
    "kind",
    "status",
    "correct",
    "rewards",
    "round",
    "progress",
}

db_app = typer.Typer(help="Manage the metadata database (migrations).", no_args_is_help=True)


def _repo(database_url: str | None):
    from sphere_core.storage.repo import open_repository

    return open_repository(database_url)


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise click.UsageError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return fmt


def _emit(
    rows: list[dict], fmt: str, columns: list[tuple[str, str]], title: str, cell: Any = None
) -> None:
    """rows as json (all fields), csv (all fields) or a table of ``columns`` (key, header)."""
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if fmt == "csv":
        fields = list(dict.fromkeys(k for r in rows for k in r)) or [k for k, _ in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()}
            )
        typer.echo(buf.getvalue(), nl=False)
        return
    from rich.table import Table

    table = Table(title=title)
    columns = [(k, h) for k, h in columns if k != "error" or any(r.get("error") for r in rows)]
    for key, header in columns:
        table.add_column(header, overflow="fold", no_wrap=key in _NO_WRAP)
    for r in rows:
        table.add_row(*[(cell or _cell)(key, r) for key, _ in columns])
    print_table(table)


def _cell(key: str, row: dict) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if key == "error":
        text = str(value).splitlines()[0] if str(value) else ""
        return text if len(text) <= 60 else text[:57] + "..."
    if key.endswith("_at"):
        return str(value)[:19].replace("T", " ")
    return str(value)


def _run_cell(key: str, row: dict) -> str:
    if key == "progress":  # the round reached of the rounds planned, e.g. "2/3"
        return _pair(row, "round", "rounds")
    if key == "status" and row.get("status") == "completed":  # "completed, 3 errors"
        from sphere_core.error_budget import errors_in_note

        errors = errors_in_note(row.get("error"))
        if errors:
            return f"completed, {errors} error{'s' if errors != 1 else ''}"
    return _cell(key, row)


def _pair(row: dict, a: str, b: str, fmt: Any = str) -> str:
    vals = [row.get(a), row.get(b)]
    return "/".join("-" if v is None else fmt(v) for v in vals)


def _route_cell(key: str, row: dict) -> str:
    if key == "answers":
        return _pair(row, "answer_max", "answer_min")
    if key == "correct":
        return _pair(row, "correct_max", "correct_min", lambda v: "Y" if v else "N")
    if key == "rewards":
        return _pair(row, "reward_max", "reward_min", lambda v: f"{v:.2f}")
    return _cell(key, row)


def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most recent N runs.")] = 20,
    fmt: FormatOpt = "table",
    database_url: DbUrlOpt = None,
) -> None:
    """List runs newest first (id, kind, status, round reached/planned, error, created, updated)."""
    _check_format(fmt)
    with _repo(database_url) as repo:
        rows = repo.list_runs(limit=limit)
    columns = [
        ("run_id", "run"),
        ("kind", "kind"),
        ("status", "status"),
        ("progress", "round"),
        ("error", "error"),
        ("created_at", "created (UTC)"),
        ("updated_at", "updated (UTC)"),
    ]
    if fmt == "table" and not rows:
        typer.echo("no runs recorded", err=True)
        return
    _emit(rows, fmt, columns, title=f"runs ({len(rows)})", cell=_run_cell)


def routes(
    run: Annotated[
        str | None, typer.Option("--run", "-r", help="Every routing event of this run.")
    ] = None,
    question: Annotated[
        str | None,
        typer.Option("--question", "-q", help="A question's history across runs and rounds."),
    ] = None,
    round_: Annotated[
        int | None,
        typer.Option("--round", min=1, help="With --run: only this self-evolution round."),
    ] = None,
    fmt: FormatOpt = "table",
    database_url: DbUrlOpt = None,
) -> None:
    """Where questions were routed, why, and the evidence (answers, correctness, rewards)."""
    from sphere_core.errors import NotFoundError, RunNotFoundError

    _check_format(fmt)
    if (run is None) == (question is None):
        raise click.UsageError("give exactly one of --run ID or --question QID")
    if round_ is not None and run is None:
        raise click.UsageError("--round goes with --run ID")
    with _repo(database_url) as repo:
        if run is not None:
            if repo.get_run(run) is None:
                raise RunNotFoundError(f"unknown run {run!r} in {repo.url}")
            rows = repo.routes_for_run(run, round=round_)
            first = ("question_id", "question")
            which = f" round {round_}" if round_ is not None else ""
            title = f"routing of run {run}{which} ({len(rows)} events)"
        else:
            rows = repo.routes_for_question(question)
            if not rows and repo.get_question(question) is None:
                raise NotFoundError(f"unknown question {question!r} in {repo.url}")
            first = ("run_id", "run")
            title = f"history of question {question} ({len(rows)} events)"
    columns = [
        first,
        ("round", "round"),
        ("stage", "stage"),
        ("decision", "decision"),
        ("reason", "reason"),
        ("answers", "answers max/min"),
        ("correct", "correct"),
        ("rewards", "rewards"),
        ("error", "error"),
        ("created_at", "time (UTC)"),
    ]
    _emit(rows, fmt, columns, title=title, cell=_route_cell)


def calibration(
    run: Annotated[str, typer.Option("--run", "-r", help="Run id to calibrate.")],
    round_: Annotated[int, typer.Option("--round", min=1, help="Self-evolution round.")] = 1,
    stage: Annotated[str, typer.Option("--stage", help="Stage to read.")] = "stage1",
    fmt: FormatOpt = "table",
) -> None:
    """PRM calibration: Sol_max-right share, AUROC of the path reward (overall, by depth)."""
    from flows.commands.cli_support import resolve_config
    from flows.run_tracking import home_for
    from sphere_core.calibration import NEAR_CHANCE, run_calibration

    _check_format(fmt)
    cfg = resolve_config()
    cal = run_calibration(home_for(cfg), run, round_, stage=stage, grading=cfg.grading)
    row = cal.as_dict() | {"run_id": run, "round": round_}
    if fmt != "table":
        _emit([row], fmt, [], title="")
        return
    pct = lambda v: "-" if v is None else f"{v:.3f}"
    rows = [
        {
            "figure": "Sol_max right (pair / pair + pair_inverted)",
            "value": (
                f"{pct(cal.sol_max_right_share)} ({cal.pairs}/{cal.pairs + cal.pairs_inverted})"
            ),
        },
        {
            "figure": f"AUROC, {cal.finished_paths} finished paths ({cal.right_paths} right)",
            "value": pct(cal.auroc)
            + (f" (near chance: < {NEAR_CHANCE})" if cal.near_chance else ""),
        },
        {"figure": "AUROC, routed Sol_max/Sol_min", "value": pct(cal.auroc_routed)},
        {
            "figure": "mean reward right / wrong",
            "value": f"{pct(cal.mean_reward_right)} / {pct(cal.mean_reward_wrong)}",
        },
    ]
    rows += [
        {"figure": f"AUROC at depth {d} ({cal.paths_by_depth[d]} paths)", "value": pct(v)}
        for d, v in cal.auroc_by_depth.items()
    ]
    _emit(
        rows,
        fmt,
        [("figure", "figure"), ("value", "value")],
        title=f"PRM calibration of run {run} round {round_} {stage}",
    )


@db_app.command("upgrade")
def db_upgrade(database_url: DbUrlOpt = None) -> None:
    """Apply all migrations (alembic upgrade head)."""
    from sphere_core.storage import db

    url = db.resolve_database_url(database_url)
    revision = db.upgrade_database(url)
    typer.echo(f"{db.redact_url(url)} is at revision {revision} (head)")


@db_app.command("current")
def db_current(database_url: DbUrlOpt = None) -> None:
    """Show the database URL (without password) and its migration revision."""
    from sphere_core.storage import db

    url = db.resolve_database_url(database_url)
    engine = db.make_engine(url)
    try:
        revision = db.current_revision(engine)
    finally:
        engine.dispose()
    head = db.head_revision()
    state = "up to date" if revision == head else "behind; run `sphere db upgrade`"
    typer.echo(f"database: {db.redact_url(url)}")
    typer.echo(f"revision: {revision or 'none (not migrated)'} (head {head}, {state})")


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
    app.command("routes")(routes)
    app.command("calibration")(calibration)
    app.add_typer(db_app, name="db")
