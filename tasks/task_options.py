"""What every SPHERE Prefect task shares: the retry policy, the per-run task options and the
cache key derived from the artifact store.

The artifact store is the source of truth for what is done; Prefect's cache only mirrors it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sphere_core.config import SphereConfig
from sphere_core.errors import GenerationError, SphereError


def is_transient(exc: BaseException) -> bool:
    """Retry policy: user errors (bad config/data/model path) are permanent; the rest is retried.

    ``GenerationError`` (server timeouts, failed batches) is a SphereError worth retrying.
    """
    if isinstance(exc, GenerationError):
        return True
    from sphere_core.disk import is_disk_full

    if is_disk_full(exc):  # a full disk does not free itself: report it (exit 3) at once
        return False
    return not isinstance(exc, SphereError)


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn`` applying :func:`is_transient` to the failed state's error."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 - classification only
        return is_transient(exc)
    return True


def task_options(cfg: SphereConfig, home: Path) -> dict[str, Any]:
    """Per-run Prefect task options from ``cfg.orchestration`` (for ``Task.with_options``)."""
    return {
        "retries": cfg.orchestration.retries,
        "retry_delay_seconds": cfg.orchestration.retry_delay_s,
        "result_storage": Path(home) / "prefect" / "results",
    }


def shard_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Prefect ``cache_key_fn`` of a stage shard: its artifact key, while the shard is on disk
    and verifies (a deleted or damaged shard returns None, so the task runs and rewrites it)."""
    from sphere_core.storage.run_outputs import RunOutputs

    plan, stage, shard = parameters["plan"], parameters["stage"], parameters["shard"]
    key = plan.stages[stage]
    if not RunOutputs(Path(parameters["home"])).shard_done(stage, key, shard):
        return None
    return f"sphere-{stage}-{key}-{shard:05d}"
