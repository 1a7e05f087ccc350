"""Options shared by CLI commands, the consoles, the run a command is working on, and the
config-resolution helper.

Command modules import heavy libraries (torch, prefect) inside their functions so that
``sphere --help`` stays fast. ``console`` (stderr) is for messages and progress, ``out``
(stdout) for results only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sphere_core.config import resolve_config  # noqa: F401  (the one resolver, re-exported for commands)
from sphere_core.presets import PRESETS

console = Console(stderr=True)
out = Console()


def print_table(table) -> None:
    """Print a rich table on stdout; piped into a file or a log, it keeps at least 160 columns
    instead of squeezing (and wrapping) the headers into 80."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=max(out.width, 160)).print(table)


PresetOpt = Annotated[
    str | None, typer.Option("--preset", "-p", help=f"Config preset: {' | '.join(PRESETS)}.")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (applied after the preset).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one key: dotted.key=value (repeatable)."),
]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Output format: table | json | csv.")
]

_current_run: str | None = None


def announce_run(run_id: str) -> None:
    """Print ``run id: RUN_ID`` on stdout and remember it: if the command is interrupted or
    terminated, its one-line message says how to continue the run (``sphere resume``)."""
    global _current_run
    _current_run = run_id
    out.print(f"run id: {run_id}", markup=False, highlight=False)


def current_run() -> str | None:
    """The run id announced by the command in progress, if any."""
    return _current_run


def forget_run() -> None:
    """Clear the announced run (the CLI does, before each command)."""
    global _current_run
    _current_run = None
