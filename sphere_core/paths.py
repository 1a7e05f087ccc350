"""Where things live on disk. One base directory, ``$SPHERE_HOME`` (default ``./.sphere``).

Owns path layout only; never creates anything at import time.
"""

from __future__ import annotations

import os
from pathlib import Path


def sphere_home(override: str | os.PathLike | None = None) -> Path:
    """The base directory: explicit override > $SPHERE_HOME > ./.sphere (absolute)."""
    raw = override or os.environ.get("SPHERE_HOME") or ".sphere"
    return Path(raw).expanduser().resolve()


def models_dir(home: Path) -> Path:
    return home / "models"


def runs_dir(home: Path) -> Path:
    return home / "runs"


def run_dir(home: Path, run_id: str) -> Path:
    return runs_dir(home) / run_id


def artifacts_dir(home: Path) -> Path:
    return home / "artifacts"


def default_database_url(home: Path) -> str:
    return f"sqlite:///{home / 'sphere.db'}"
