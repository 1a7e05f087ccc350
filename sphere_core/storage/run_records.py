"""What the metadata store records about a run, in one place: its questions, routing events,
pairs, checkpoints and evaluations (each keyed by run and round).

Every function opens the store for the duration of one call and closes it. Re-recording is
idempotent (upserts keyed by run, round, question and stage); re-running a run id with another
config prunes routing events of stages that no longer apply, so stale results never mix with
new ones. SQL lives in ``repo.py``; this module only decides what to record.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sphere_core.config import SphereConfig


@contextmanager
def open_store(cfg: SphereConfig, home: Path) -> Iterator[Any]:
    """The run's metadata store (closed on exit)."""
    from sphere_core.storage.repo import open_repository

    repo = open_repository(cfg.storage.database_url, Path(home))
    try:
        yield repo
    finally:
        repo.close()


def ensure_run(cfg: SphereConfig, home: Path, run_id: str, kind: str) -> None:
    """Record ``run_id`` when the store has no record of it yet (train/evaluate need one)."""
    with open_store(cfg, home) as repo:
        if repo.get_run(run_id) is None:
            repo.create_run(run_id, cfg.to_dict(), cfg.config_hash(), kind=kind)


def record_generate(cfg: SphereConfig, home: Path, run_id: str, plan: Any) -> None:
    """Questions, routing events (stale stages pruned) and pairs of one round of a run."""
    import pandas as pd

    from sphere_core.storage.run_view import RunView

    view = RunView(home, run_id, plan.round)
    pairs = pd.concat(
        [view.pairs("train").assign(split="train"), view.pairs("eval").assign(split="eval")],
        ignore_index=True,
    )
    with open_store(cfg, home) as repo:
        repo.upsert_questions(view.questions())
        repo.prune_routing_events(run_id, plan.round, keep=dict(plan.stages))
        for stage, key in plan.stages.items():
            repo.record_routing_events(view.routing(stage), artifact_key=key, round=plan.round)
        repo.record_pairs(run_id, plan.round, pairs, artifact_key=plan.pairs_key)


def record_training(
    cfg: SphereConfig, home: Path, run_id: str, result: Any, round: int = 1
) -> None:
    """The adapter (and merged model) a DPO run wrote, with its scalar metrics."""
    ensure_run(cfg, home, run_id, kind="train")
    summary = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, bool))}
    with open_store(cfg, home) as repo:
        repo.record_checkpoint(
            run_id,
            result.adapter_dir,
            "adapter",
            {**summary, "best_checkpoint": result.best_checkpoint},
            round=round,
        )
        if result.merged_dir:
            repo.record_checkpoint(run_id, result.merged_dir, "merged", summary, round=round)


def record_evaluation(
    cfg: SphereConfig,
    home: Path,
    run_id: str,
    summary: Any,
    details: dict | None = None,
    round: int = 1,
) -> int:
    """Each evaluation summary row (model, benchmark, metric, value, n)."""
    from sphere_core.evaluation.runner import record_summary

    with open_store(cfg, home) as repo:
        return record_summary(repo, run_id, summary, details=details, round=round)
