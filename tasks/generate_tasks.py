"""Thin Prefect tasks of the ``generate`` flow: ingest, one search stage on one shard, pairs,
and finalize (materialise runs/<run_id>/ + record routing events in the store).

Every task takes the config dict, ``home`` and artifact keys (never live models; models load
in-process through ``sphere_core.backends.cache``). A task first asks the artifact store
whether its output exists and skips if so; otherwise it calls sphere_core and writes its
shard atomically. Artifacts are run-agnostic (keyed by config + inputs); the run id column
is stamped when the run's outputs are materialised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task

from sphere_core.config import config_from_dict
from sphere_core.errors import ArtifactError, InputDataError
from sphere_core.schemas import REJECT_COLUMNS, ROUTING_COLUMNS, SCHEMA_VERSION, TREE_COLUMNS
from sphere_core.storage.artifacts import ArtifactStore, artifact_key
from tasks.common import (
    PAIRS_EVAL,
    PAIRS_TRAIN,
    QUESTIONS,
    REJECTS,
    file_fingerprint,
    retry_condition,
    routing_stage,
    shard_cache_key,
    shard_count,
    stage_config,
    tree_stage,
)

# stage -> decision in the Stage-1 routing that sends a question there (DESIGN §6)
STAGE_INPUT_DECISION = {"stage2": "to_correction", "stage3": "to_diversity"}


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@task(name="ingest", task_run_name="ingest", retry_condition_fn=retry_condition)
def ingest_task(config: dict[str, Any], home: str) -> dict[str, Any]:
    """Validate the question file, shard accepted questions; returns key and shard count."""
    from sphere_core.data.ingest import ingest_file, resolve_data_path

    cfg = config_from_dict(config)
    store = ArtifactStore(Path(home))
    path = resolve_data_path(cfg.data.path)
    if not path.exists():
        raise InputDataError(f"question file not found: {path} (data.path={cfg.data.path!r})")
    if "stage3" in cfg.routing.stages:
        from sphere_core.search.small_model import small_model_warning

        if warning := small_model_warning(cfg):
            get_run_logger().warning(warning)
    key = artifact_key("ingest", stage_config("ingest", config), [file_fingerprint(path)])
    size = cfg.orchestration.shard_size
    if store.is_complete(QUESTIONS, key):
        questions = store.read_stage(QUESTIONS, key)
        rejects = store.read_stage(REJECTS, key)
        return _ingest_summary(key, questions, rejects, size, cached=True)
    result = ingest_file(cfg.data.path, cfg.data, **_token_counter(cfg, Path(home)))
    questions = result.questions.reset_index(drop=True)
    if questions.empty:
        raise InputDataError(
            f"no usable questions in {path}: {len(result.rejects)} row(s) rejected "
            f"(first reason: {result.rejects['reason'].iloc[0] if len(result.rejects) else 'empty file'})"
        )
    rejects = result.rejects if len(result.rejects) else _empty(REJECT_COLUMNS)
    if not store.is_complete(REJECTS, key):  # complete if an earlier attempt died right after
        store.write_shard(REJECTS, key, 0, rejects)
        store.write_manifest(REJECTS, key, {"schema_version": SCHEMA_VERSION})
    n_shards = shard_count(len(questions), size)
    for shard in range(n_shards):
        store.write_shard(QUESTIONS, key, shard, questions.iloc[shard * size : (shard + 1) * size])
    store.write_manifest(QUESTIONS, key, {"stats": result.stats}, expected_shards=n_shards)  # last
    return _ingest_summary(key, questions, rejects, size, cached=False)


def _token_counter(cfg: Any, home: Path) -> dict[str, Any]:
    """Reject prompts that leave no room for a step in the policy's context (as generate_run)."""
    from sphere_core.backends.cache import get_generator

    policy = cfg.models.policy
    generator = get_generator(policy, home)
    budget = max(1, policy.max_model_len - cfg.search.max_step_tokens)
    return {"max_prompt_tokens": budget, "count_tokens": generator.count_tokens}


def _ingest_summary(key: str, questions: pd.DataFrame, rejects: pd.DataFrame, size: int, *, cached: bool) -> dict:
    return {
        "key": key,
        "n_shards": shard_count(len(questions), size),
        "questions": len(questions),
        "rejected": len(rejects),
        "cached": cached,
    }


@task(
    name="search-stage",
    task_run_name="{stage}-shard-{shard:05d}",
    cache_key_fn=shard_cache_key,
    retry_condition_fn=retry_condition,
)
def stage_task(
    stage: str,
    config: dict[str, Any],
    home: str,
    run_id: str,
    key: str,
    shard: int,
    questions_key: str,
    upstream_key: str | None = None,
) -> dict[str, Any]:
    """Run one search stage on one shard (Stage 2/3 only on the shard's routed questions)."""
    from sphere_core.generate import run_stage

    store = ArtifactStore(Path(home))
    if store.has_shard(routing_stage(stage), key, shard):
        return {"stage": stage, "shard": shard, "key": key, "cached": True}
    questions = store.read_shard(QUESTIONS, questions_key, shard)
    upstream = None
    if stage in STAGE_INPUT_DECISION:
        if upstream_key is None:
            raise ValueError(f"{stage} needs the stage1 artifact key")
        upstream = store.read_shard(routing_stage("stage1"), upstream_key, shard)
        wanted = upstream["decision"] == STAGE_INPUT_DECISION[stage]
        if not wanted.any():  # nothing routed here: an empty shard, no model load
            written = _write_shard_pair(store, stage, key, shard, _empty(TREE_COLUMNS), _empty(ROUTING_COLUMNS))
            return {"stage": stage, "shard": shard, "key": key, "cached": not written, "questions": 0}
    cfg = config_from_dict(config)
    result = run_stage(stage, cfg, questions, upstream, run_id=run_id, home=Path(home))
    written = _write_shard_pair(store, stage, key, shard, result.tree, result.routing)
    return {"stage": stage, "shard": shard, "key": key, "cached": not written, "questions": len(result.routing)}


def _write_shard_pair(
    store: ArtifactStore, stage: str, key: str, shard: int, tree: pd.DataFrame, routing: pd.DataFrame
) -> bool:
    """Tree first, routing last (routing present = shard done). False when a concurrent run
    with the same key sealed the artifact first: its identical shard stands."""
    try:
        if store.is_complete(routing_stage(stage), key):
            return False
        store.write_shard(tree_stage(stage), key, shard, tree)
        store.write_shard(routing_stage(stage), key, shard, routing)
    except ArtifactError:
        if store.is_complete(routing_stage(stage), key) and store.has_shard(routing_stage(stage), key, shard):
            return False  # sealed by the other run between our check and our write
        raise
    return True


def seal_stages(store: ArtifactStore, keys: dict[str, str], n_shards: int) -> None:
    """Write the manifests of every finished stage (tree first, routing last)."""
    for stage, key in keys.items():
        for name in (tree_stage(stage), routing_stage(stage)):
            if not store.is_complete(name, key):
                store.write_manifest(name, key, {"schema_version": SCHEMA_VERSION}, expected_shards=n_shards)


def read_stage_frames(store: ArtifactStore, keys: dict[str, str], run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All shards of every stage that ran, routing and tree, stamped with ``run_id``."""
    routing = [store.read_stage(routing_stage(s), k) for s, k in keys.items()]
    trees = [store.read_stage(tree_stage(s), k) for s, k in keys.items()]
    routing_df = _concat(routing, ROUTING_COLUMNS).assign(run_id=run_id)
    tree_df = _concat(trees, TREE_COLUMNS).assign(run_id=run_id)
    return routing_df, tree_df


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else _empty(columns)


@task(name="assemble-pairs", task_run_name="assemble-pairs", retry_condition_fn=retry_condition)
def pairs_task(
    config: dict[str, Any], home: str, run_id: str, key: str, questions_key: str, stage_keys: dict[str, str]
) -> dict[str, Any]:
    """Build train/eval preference pairs from every stage's routing (one task per run)."""
    from sphere_core.generate import build_pairs

    store = ArtifactStore(Path(home))
    n_shards = len(store.list_shards(QUESTIONS, questions_key))
    seal_stages(store, stage_keys, n_shards)
    if store.is_complete(PAIRS_EVAL, key):
        return {"key": key, "cached": True}
    cfg = config_from_dict(config)
    questions = store.read_stage(QUESTIONS, questions_key)
    routing, trees = read_stage_frames(store, stage_keys, run_id)
    train, evaluation = build_pairs(cfg, questions, routing, trees, run_id=run_id)
    for name, frame in ((PAIRS_TRAIN, train), (PAIRS_EVAL, evaluation)):  # eval last: marks done
        if not store.is_complete(name, key):
            store.write_shard(name, key, 0, frame)
            store.write_manifest(name, key, {"schema_version": SCHEMA_VERSION}, expected_shards=1)
    return {"key": key, "cached": False, "train": len(train), "eval": len(evaluation)}


@task(name="finalize", task_run_name="finalize", retry_condition_fn=retry_condition)
def finalize_task(
    config: dict[str, Any],
    home: str,
    run_id: str,
    ingest_key: str,
    stage_keys: dict[str, str],
    pairs_key: str,
) -> dict[str, Any]:
    """Materialise runs/<run_id>/ and record questions + routing events (idempotent upserts)."""
    from sphere_core.paths import run_dir
    from sphere_core.storage.repo import open_repository

    cfg = config_from_dict(config)
    store = ArtifactStore(Path(home))
    questions = store.read_stage(QUESTIONS, ingest_key)
    rejects = store.read_stage(REJECTS, ingest_key)
    train = store.read_stage(PAIRS_TRAIN, pairs_key).assign(run_id=run_id)
    evaluation = store.read_stage(PAIRS_EVAL, pairs_key).assign(run_id=run_id)
    out = run_dir(Path(home), run_id)
    _write(out / "questions.parquet", questions)
    _write(out / "rejects.parquet", rejects)
    routing_all = []
    for stage, key in stage_keys.items():
        routing, tree = read_stage_frames(store, {stage: key}, run_id)
        _write(out / "tree" / f"{stage}.parquet", tree)
        _write(out / "routing" / f"{stage}.parquet", routing)
        routing_all.append(routing)
    _write(out / "pairs" / "train.parquet", train)
    _write(out / "pairs" / "eval.parquet", evaluation)

    with open_repository(cfg.storage.database_url, Path(home)) as repo:
        repo.upsert_questions(questions)
        for stage, routing in zip(stage_keys, routing_all):
            repo.record_routing_events(routing, artifact_key=stage_keys[stage])
    return {
        "run_dir": str(out),
        "questions": len(questions),
        "rejected": len(rejects),
        "routing_counts": routing_counts(_concat(routing_all, ROUTING_COLUMNS)),
        "pairs": {"train": len(train), "eval": len(evaluation)},
    }


def routing_counts(routing: pd.DataFrame) -> list[dict[str, Any]]:
    """Questions per (stage, decision), sorted: the rows of the routing table artifact."""
    counts = routing.groupby(["stage", "decision"]).size().reset_index(name="questions")
    return [
        {"stage": str(r.stage), "decision": str(r.decision), "questions": int(r.questions)}
        for r in counts.itertuples(index=False)
    ]


def _write(path: Path, df: pd.DataFrame) -> None:
    """Atomic Parquet write: temp file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
