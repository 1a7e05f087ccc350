"""Helpers shared by the flows: config from flow parameters, run ids, the run record
lifecycle (running -> completed | failed with the error), the task runner from config, and
the run plan file that progress displays poll.

Owns nothing about stages themselves (tasks/ and sphere_core/ do).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sphere_core.config import PRESETS, SphereConfig, apply_override, deep_merge, validate
from sphere_core.errors import ConfigError
from sphere_core.paths import run_dir, sphere_home

PLAN_FILE = "_plan.json"


def new_run_id() -> str:
    """``run-YYYYmmdd-HHMMSS-xxxx`` (sortable, unique enough for concurrent starts)."""
    return f"run-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def resolve_flow_config(
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> SphereConfig:
    """Flow parameters -> config: preset, then the ``config`` dict on top, then overrides."""
    if preset and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    tree = deep_merge(PRESETS[preset] if preset else {}, config or {})
    for assignment in overrides or []:
        tree = apply_override(tree, assignment)
    return validate(tree)


def home_for(cfg: SphereConfig) -> Path:
    home = sphere_home(cfg.storage.home)
    home.mkdir(parents=True, exist_ok=True)
    return home


def repository(cfg: SphereConfig, home: Path) -> Any:
    """The metadata store of ``cfg`` (a context manager: closes its engine on exit)."""
    from sphere_core.storage.repo import open_repository

    return open_repository(cfg.storage.database_url, home)


def current_flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    run = flow_run.id
    return str(run) if run else None


@contextmanager
def tracked_run(cfg: SphereConfig, run_id: str, home: Path, kind: str) -> Iterator[None]:
    """Record the run (idempotent), mark it running, then completed or failed with the error."""
    flow_run_id = current_flow_run_id()
    with repository(cfg, home) as repo:
        repo.create_run(run_id, cfg.to_dict(), cfg.config_hash(), kind=kind, flow_run_id=flow_run_id)
        repo.set_run_status(run_id, "running", flow_run_id=flow_run_id)
    try:
        yield
    except BaseException as exc:
        with repository(cfg, home) as repo:
            repo.set_run_status(run_id, "failed", error=describe_error(exc))
        raise
    with repository(cfg, home) as repo:
        repo.set_run_status(run_id, "completed")


def describe_error(exc: BaseException) -> str:
    """One line for the run record: the type and message of the root user-facing error."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def make_task_runner(cfg: SphereConfig):
    """The shard task runner from ``cfg.orchestration``: threads (default) or Ray."""
    orch = cfg.orchestration
    if orch.task_runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as err:  # pragma: no cover - depends on the optional extra
            raise ConfigError(
                "orchestration.task_runner=ray needs prefect-ray: pip install 'sphere-dpo[ray]'"
            ) from err
        return RayTaskRunner(address=orch.ray_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=orch.max_workers)


def write_plan(home: Path, run_id: str, plan: dict[str, Any]) -> None:
    """Record which artifact keys and how many shards this run expects (read by progress UIs)."""
    path = run_dir(home, run_id) / PLAN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan, indent=2))
    tmp.replace(path)


def read_plan(home: Path, run_id: str) -> dict[str, Any] | None:
    path = run_dir(home, run_id) / PLAN_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
