"""Thin Prefect tasks of the ``generate`` flow: config + artifact keys in, keys/counts out.

Storage is ``sphere_core.storage.run_outputs``; the work is ``sphere_core.data.questions``,
``sphere_core.stages.runner`` and ``sphere_core.pairs``. Tasks never receive live models
(they load in-process through ``sphere_core.backends.cache``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from sphere_core import progress
from sphere_core.config import SphereConfig
from sphere_core.storage.run_outputs import RunOutputs, RunPlan, ShardInfo
from tasks.task_options import retry_condition, shard_cache_key


@task(name="ingest", task_run_name="ingest", retry_condition_fn=retry_condition)
def ingest_task(cfg: SphereConfig, home: str) -> tuple[str, int, int, int]:
    """Validate and shard the question file: (questions key, n_shards, questions, rejected)."""
    from sphere_core.data.questions import ingest_for_run, question_file
    from sphere_core.storage.keys import ingest_key, input_fingerprint

    key = ingest_key(cfg, input_fingerprint(question_file(cfg)))
    n_shards, questions, rejected, _ = RunOutputs(Path(home)).ingest(
        key, cfg.orchestration.shard_size, lambda: ingest_for_run(cfg, Path(home))
    )
    return key, n_shards, questions, rejected


@task(
    name="search-stage",
    task_run_name="{stage}-shard-{shard:05d}",
    cache_key_fn=shard_cache_key,
    retry_condition_fn=retry_condition,
)
def stage_task(
    stage: str, cfg: SphereConfig, home: str, run_id: str, plan: RunPlan, shard: int
) -> ShardInfo:
    """One stage on one shard of questions (search, grade, route)."""
    from sphere_core.search.pruned import SearchStats
    from sphere_core.stages.runner import run_stage

    stats = SearchStats()
    info = RunOutputs(Path(home)).stage_shard(
        plan,
        stage,
        shard,
        lambda questions, upstream: run_stage(
            stage, cfg, questions, upstream, run_id=run_id, home=Path(home), stats=stats
        ),
    )
    info.search = stats.as_dict()
    progress.emit(
        "shard",
        f"{stage} shard {shard + 1}/{plan.n_shards}: {info.questions} questions "
        f"{info.counts or ''}{' (cached)' if info.cached else f' in {info.elapsed_s:.1f}s'}"
        f"{f' ({info.retried} searched again)' if info.retried else ''}",
        stage=stage,
        shard=shard,
        total=plan.n_shards,
        counts=info.counts,
        elapsed_s=info.elapsed_s,
        cached=info.cached,
    )
    return info


@task(name="assemble-pairs", task_run_name="assemble-pairs", retry_condition_fn=retry_condition)
def pairs_task(
    cfg: SphereConfig, home: str, run_id: str, plan: RunPlan, refresh: bool = False
) -> dict:
    """Train/eval preference pairs from every stage's routing (one task per run); ``refresh``
    when a stage shard was searched again (pairs built before are stale)."""
    from sphere_core.pairs import build_pairs

    outputs = RunOutputs(Path(home))
    outputs.seal(plan)

    def compute():
        routing, trees = outputs.stage_frames(plan, run_id)
        questions = outputs.store.read_stage("questions", plan.questions_key)
        return build_pairs(cfg, questions, routing, trees, run_id=run_id)

    return outputs.pairs(plan, compute, refresh=refresh)


@task(name="finalize", task_run_name="finalize", retry_condition_fn=retry_condition)
def finalize_task(cfg: SphereConfig, home: str, run_id: str, plan: RunPlan, summary: dict) -> str:
    """Publish the run view and record questions, routing events and pairs in the store."""
    from sphere_core.storage.run_records import record_generate
    from sphere_core.storage.run_view import publish_view

    view_dir = publish_view(RunOutputs(Path(home)), run_id, plan, {"summary": summary})
    record_generate(cfg, Path(home), run_id, plan)
    return str(view_dir)
