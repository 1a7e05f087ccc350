"""Helpers shared by the flows: the typed config from flow parameters, run ids, the run record
lifecycle (running -> completed | failed | cancelled) and the task runner from config.

Owns nothing about stages or storage (``sphere_core`` does).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from flows import cancellation, local_api
from sphere_core.config import SphereConfig, resolve_config
from sphere_core.errors import ConfigError
from sphere_core.paths import sphere_home, validate_name
from sphere_core.progress import LOGGER_NAME as PROGRESS_LOGGER
from sphere_core.storage.run_records import open_store

# every flow imports this module: a UI cancel during DPO ends Cancelled; a temporary local API
# server (no PREFECT_API_URL) is started out of reach of the terminal's Ctrl-C
cancellation.install()
local_api.install()
# progress events are INFO records: keep them when a flow runs under a WARNING root logger (a
# deployment run's process; `sphere serve` forwards the "sphere" loggers to the run logs)
if logging.getLogger(PROGRESS_LOGGER).level == logging.NOTSET:
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO)


def new_run_id() -> str:
    """``run-YYYYmmdd-HHMMSS-xxxx`` (sortable, unique enough for concurrent starts)."""
    return f"run-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def flow_config(
    config: SphereConfig | dict[str, Any] | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    run_id: str | None = None,
) -> SphereConfig:
    """The typed config of a flow: passed through when a parent flow (or the CLI) already
    resolved it; resolved once here from deployment parameters otherwise. With ``run_id`` (the
    train, evaluate and report flows), parameters apply on top of the config that run was
    recorded with, so a deployment run started from the UI with only a run id trains and
    evaluates with that run's models and settings."""
    if isinstance(config, SphereConfig) and not preset and not overrides:
        return config
    if isinstance(config, SphereConfig):
        config = config.to_dict()
    given = resolve_config(preset, config, overrides)  # validates the given parts early
    base = stored_run_config(given, run_id) if run_id else None
    return resolve_config(preset, config, overrides, base=base) if base else given


def stored_run_config(cfg: SphereConfig, run_id: str) -> dict[str, Any] | None:
    """The config ``run_id`` was recorded with in the store ``cfg`` names (None: no such run)."""
    with open_store(cfg, home_for(cfg)) as repo:
        record = repo.get_run(flow_run_id(run_id))
    return (record or {}).get("config") or None


def flow_run_id(run_id: str | None) -> str:
    """The given run id (validated: it becomes a directory name) or a new one."""
    return validate_name(run_id, "run id") if run_id is not None else new_run_id()


def home_for(cfg: SphereConfig) -> Path:
    from sphere_core.paths import writable_dir

    return writable_dir(sphere_home(cfg.storage.home), "SPHERE_HOME")


def current_flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    run = flow_run.id
    return str(run) if run else None


class RunRecord:
    """The store record of a run while a flow drives it (see :func:`tracked_run`)."""

    def __init__(self, cfg: SphereConfig, run_id: str, home: Path):
        self.cfg, self.run_id, self.home = cfg, run_id, home
        self.status = "running"

    def set(self, status: str, error: str | None = None, **fields: Any) -> None:
        with open_store(self.cfg, self.home) as repo:
            repo.set_run_status(self.run_id, status, error=error, **fields)
        self.status = status

    def complete(self, note: str | None = None) -> None:
        """Mark the run completed now (work after this, e.g. the report, sees the final status);
        ``note``: the errors it completed with (``sphere_core.error_budget``), kept as its error."""
        if self.status != "completed":
            self.set("completed", error=note)

    def reached_round(self, round: int) -> None:
        with open_store(self.cfg, self.home) as repo:
            repo.set_run_round(self.run_id, round)


@contextmanager
def tracked_run(
    cfg: SphereConfig, run_id: str, home: Path, kind: str, rounds: int = 1
) -> Iterator[RunRecord]:
    """Record the run (idempotent) and mark it running; then completed, or failed with the error,
    or cancelled when interrupted (SIGINT/SIGTERM: ``sphere resume`` continues it)."""
    flow_run = current_flow_run_id()
    with open_store(cfg, home) as repo:
        repo.create_run(
            run_id, cfg.to_dict(), cfg.config_hash(), kind=kind, flow_run_id=flow_run, rounds=rounds
        )
        repo.update_run_config(run_id, cfg.to_dict(), cfg.config_hash(), rounds=rounds)
        repo.set_run_status(run_id, "running", flow_run_id=flow_run)
    record = RunRecord(cfg, run_id, home)
    try:
        yield record
    except BaseException as exc:
        record.set("cancelled" if is_interruption(exc) else "failed", error=describe_error(exc))
        raise
    record.complete()


def is_interruption(exc: BaseException) -> bool:
    """SIGINT/SIGTERM (ours, or Prefect's TerminationSignal inside a flow run): resumable."""
    from prefect.exceptions import TerminationSignal

    return isinstance(exc, (KeyboardInterrupt, SystemExit, TerminationSignal))


def describe_error(exc: BaseException) -> str:
    """One line for the run record: the type and message of the root user-facing error."""
    if is_interruption(exc):
        from sphere_core.errors import Terminated

        if isinstance(exc, Terminated) or type(exc).__name__ == "TerminationSignal":
            return "terminated (SIGTERM)"
        return (
            "interrupted (SIGINT)"
            if isinstance(exc, KeyboardInterrupt)
            else f"interrupted ({type(exc).__name__})"
        )
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
