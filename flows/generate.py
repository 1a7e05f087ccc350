"""The ``generate`` flow (DESIGN §1): ingest -> per shard: stage1 -> (stage2 | stage3 on the
shard's routed questions) -> assemble pairs -> materialise runs/<run_id>/ + routing events in
the store -> Prefect artifacts (routing counts, rejected inputs, markdown summary).

One task per stage per shard (``stage1-shard-00003``), retries from ``cfg.orchestration``.
Artifact keys chain (stage key includes its input keys), so changing one stage's config
recomputes that stage and what is downstream only; finished shards are always skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait

from flows import prefect_env  # noqa: F401  (offline-safe Prefect settings before prefect)
from flows.common import (
    home_for,
    make_task_runner,
    new_run_id,
    resolve_flow_config,
    tracked_run,
    write_plan,
)
from sphere_core.config import SphereConfig
from sphere_core.storage.artifacts import ArtifactStore, artifact_key
from tasks.common import REJECTS, SEARCH_STAGES, stage_config, task_options
from tasks.generate_tasks import finalize_task, ingest_task, pairs_task, stage_task


def plan_keys(cfg_dict: dict[str, Any], questions_key: str) -> tuple[dict[str, str], str]:
    """Artifact keys of the search stages that run, and of the pairs (pure, cheap)."""
    stages = [s for s in SEARCH_STAGES if s in cfg_dict["routing"]["stages"]]
    keys = {"stage1": artifact_key("stage1", stage_config("stage1", cfg_dict), [questions_key])}
    for stage in stages[1:]:
        keys[stage] = artifact_key(stage, stage_config(stage, cfg_dict), [keys["stage1"]])
    pairs_key = artifact_key("pairs", stage_config("pairs", cfg_dict), [questions_key, *keys.values()])
    return keys, pairs_key


@flow(name="generate", description="Ingest -> pruned search (3 stages) -> routing -> preference pairs.")
def generate_flow(
    run_id: str | None = None,
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    track_run: bool = True,
) -> dict[str, Any]:
    """Generate preference pairs for ``run_id`` (new id if None); re-running a run id resumes.

    ``config`` is a (partial) config dict applied over ``preset``; ``overrides`` are
    ``dotted.key=value`` strings. ``track_run=False`` when a parent flow owns the run record.
    """
    cfg = resolve_flow_config(config, preset, overrides)
    run_id = run_id or new_run_id()
    home = home_for(cfg)
    if not track_run:
        return _generate(cfg, run_id, home)
    with tracked_run(cfg, run_id, home, kind="generate"):
        return _generate(cfg, run_id, home)


def _generate(cfg: SphereConfig, run_id: str, home: Path) -> dict[str, Any]:
    cfg_dict = cfg.to_dict()
    opts = task_options(cfg_dict, home)
    ingest = ingest_task.with_options(**opts)(cfg_dict, str(home))
    qkey, n_shards = ingest["key"], ingest["n_shards"]
    keys, pairs_key = plan_keys(cfg_dict, qkey)
    write_plan(home, run_id, {"ingest_key": qkey, "n_shards": n_shards, "stages": keys, "pairs_key": pairs_key})

    stage = stage_task.with_options(**opts)
    futures = []
    with make_task_runner(cfg) as runner:
        for shard in range(n_shards):
            common = {"config": cfg_dict, "home": str(home), "run_id": run_id, "shard": shard, "questions_key": qkey}
            first = runner.submit(stage, {**common, "stage": "stage1", "key": keys["stage1"], "upstream_key": None})
            futures.append(first)
            for name in list(keys)[1:]:
                params = {**common, "stage": name, "key": keys[name], "upstream_key": keys["stage1"]}
                futures.append(runner.submit(stage, params, wait_for=[first]))
        wait(futures)
        for future in futures:  # every shard has finished; now surface the first failure
            future.result()

    pairs_task.with_options(**opts)(cfg_dict, str(home), run_id, pairs_key, qkey, keys)
    summary = finalize_task.with_options(**opts)(cfg_dict, str(home), run_id, qkey, keys, pairs_key)
    summary.update(run_id=run_id, artifact_keys={"questions": qkey, **keys, "pairs": pairs_key})
    publish_artifacts(summary, ArtifactStore(home), qkey)
    return summary


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def publish_artifacts(summary: dict[str, Any], store: ArtifactStore, questions_key: str) -> None:
    """Table artifacts (routing counts per stage, rejected inputs) and a markdown summary."""
    run_id = summary["run_id"]
    counts = summary["routing_counts"]
    create_table_artifact(
        counts or [{"stage": "-", "decision": "-", "questions": 0}],
        key=f"{_slug(run_id)}-routing",
        description=f"Routing decisions per stage for {run_id}",
    )
    rejects = store.read_stage(REJECTS, questions_key)
    rows = rejects[["source", "row", "reason"]].head(200).astype(str).to_dict("records")
    create_table_artifact(
        rows or [{"source": "-", "row": "-", "reason": "no rejected rows"}],
        key=f"{_slug(run_id)}-rejects",
        description=f"Rejected input rows for {run_id} ({len(rejects)} in all; first 200 shown)",
    )
    lines = [
        f"# SPHERE generate: `{run_id}`",
        "",
        f"- questions: **{summary['questions']}** (rejected rows: {summary['rejected']})",
        f"- pairs: **{summary['pairs']['train']}** train, **{summary['pairs']['eval']}** eval",
        f"- outputs: `{summary['run_dir']}`",
        "",
        "| stage | decision | questions |",
        "|---|---|---|",
        *[f"| {c['stage']} | {c['decision']} | {c['questions']} |" for c in counts],
    ]
    create_markdown_artifact("\n".join(lines), key=f"{_slug(run_id)}-summary", description="Run summary")
