"""Shared helpers for the thin Prefect task wrappers: which config sections key each stage,
the Prefect cache key derived from the artifact key, and the retry policy.

Owns the mapping "stage -> config that can change its output" (so changing one stage's
config recomputes that stage and everything downstream, because downstream keys include the
upstream keys). Does not compute anything itself; sphere_core does the work.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sphere_core.errors import GenerationError, SphereError

# Artifact "stages" (directory names under artifacts/). A search stage writes two frames per
# shard under the same key: the tree first, the routing last (routing present = shard done).
QUESTIONS = "questions"
REJECTS = "rejects"
PAIRS_TRAIN = "pairs_train"
PAIRS_EVAL = "pairs_eval"
SEARCH_STAGES = ("stage1", "stage2", "stage3")


def tree_stage(stage: str) -> str:
    return f"{stage}_tree"


def routing_stage(stage: str) -> str:
    return f"{stage}_routing"


def _search_sections(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy": cfg["models"]["policy"],
        "prm": cfg["prm"],
        "search": cfg["search"],
        "reward": cfg["reward"],
        "orm": cfg["orm"],
        "grading": cfg["grading"],
    }


def stage_config(stage: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The config that can change ``stage``'s output (and nothing else)."""
    if stage == "ingest":
        return {
            "data": cfg["data"],
            "shard_size": cfg["orchestration"]["shard_size"],
            # prompts longer than the context are rejected at ingest with the policy tokenizer
            "tokenizer": cfg["models"]["policy"]["path"],
            "max_model_len": cfg["models"]["policy"]["max_model_len"],
            "max_step_tokens": cfg["search"]["max_step_tokens"],
        }
    if stage == "stage1":
        return _search_sections(cfg)
    if stage == "stage2":
        return {**_search_sections(cfg), "correction_source": cfg["routing"]["correction_source"]}
    if stage == "stage3":
        return {
            **_search_sections(cfg),
            "small": cfg["models"]["small"],
            "small_is_intended": cfg["models"]["small_is_intended"],
        }
    if stage == "pairs":
        return {"pairs": cfg["pairs"], "stages": cfg["routing"]["stages"]}
    raise ValueError(f"no stage config for {stage!r}")


def file_fingerprint(path: Path) -> str:
    """Content hash of an input file (or of every file under a directory, by relative name)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "file-" + digest.hexdigest()[:24]


def prefect_cache_key(stage: str, key: str, shard: int) -> str:
    return f"sphere-{stage}-{key}-{shard:05d}"


def shard_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Prefect ``cache_key_fn``: the artifact key, but only while the shard exists on disk.

    The artifact store is the source of truth: a deleted shard returns None (no Prefect cache
    lookup) so the task runs and rewrites it instead of Prefect replaying a stale result.
    """
    from sphere_core.storage.artifacts import ArtifactStore

    stage, key, shard = parameters["stage"], parameters["key"], parameters["shard"]
    if not ArtifactStore(Path(parameters["home"])).has_shard(routing_stage(stage), key, shard):
        return None
    return prefect_cache_key(stage, key, shard)


def is_transient(exc: BaseException) -> bool:
    """Retry policy: user errors (bad config/data/model path) are permanent; the rest is retried.

    ``GenerationError`` (server timeouts, failed batches) is a SphereError that is worth retrying.
    """
    if isinstance(exc, GenerationError):
        return True
    return not isinstance(exc, SphereError)


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn`` applying :func:`is_transient` to the failed state's error."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 - classification only
        return is_transient(exc)
    return True


def task_options(cfg: dict[str, Any], home: Path) -> dict[str, Any]:
    """Per-run Prefect task options from ``cfg.orchestration`` (for ``Task.with_options``)."""
    orch = cfg["orchestration"]
    return {
        "retries": orch["retries"],
        "retry_delay_seconds": orch["retry_delay_s"],
        "result_storage": Path(home) / "prefect" / "results",
    }


def shard_count(n_rows: int, shard_size: int) -> int:
    return max(1, -(-n_rows // shard_size))
