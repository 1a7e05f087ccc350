"""Options shared by CLI commands and the config-resolution helper.

Command modules import heavy libraries (torch, prefect) inside their functions so that
``sphere --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sphere_core.config import SphereConfig, load_config

console = Console(stderr=True)
out = Console()

PresetOpt = Annotated[
    str | None, typer.Option("--preset", "-p", help="Config preset: demo | paper.")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (applied after the preset).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one key: dotted.key=value (repeatable)."),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Output format: table | json | csv.")]


def resolve_config(preset: str | None, config: Path | None, overrides: list[str] | None) -> SphereConfig:
    return load_config(preset=preset, config_file=config, overrides=list(overrides or []))
