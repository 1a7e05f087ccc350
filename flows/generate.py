"""The ``generate`` flow: ingest -> every selected stage per shard (in stage order, a stage's
shard waiting for its upstream stage's shard) -> pairs -> run view + store -> Prefect artifacts.

One task per stage per shard (``stage1-shard-00003``), retries from ``cfg.orchestration``.
Artifact keys chain (``sphere_core.storage.run_outputs.plan_run``), so changing one stage's
config recomputes that stage and what is downstream only; finished shards are always reused.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait

from flows.run_tracking import flow_config, flow_run_id, home_for, make_task_runner, tracked_run
from sphere_core import progress
from sphere_core.config import SphereConfig
from sphere_core.error_budget import check_error_budget, first_error
from sphere_core.results import GenerateResult
from sphere_core.storage.run_outputs import RunPlan, plan_run
from sphere_core.storage.run_view import RunView
from tasks.generate_tasks import finalize_task, ingest_task, pairs_task, stage_task
from tasks.task_options import task_options


@flow(
    name="generate", description="Ingest -> pruned search (stages) -> routing -> preference pairs."
)
def generate_flow(
    run_id: str | None = None,
    config: SphereConfig | dict[str, Any] | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    track_run: bool = True,
    round: int = 1,
) -> GenerateResult:
    """Generate preference pairs for ``run_id`` (new id if None); re-running a run id resumes.

    ``config`` is a typed config (from a parent flow or the CLI) or a partial config dict applied
    over ``preset`` (deployments); ``overrides`` are ``dotted.key=value`` strings.
    ``track_run=False`` when a parent flow owns the run record.
    """
    cfg = flow_config(config, preset, overrides)
    run_id = flow_run_id(run_id)
    home = home_for(cfg)
    if not track_run:
        return generate_round(cfg, run_id, home, round)
    with tracked_run(cfg, run_id, home, kind="generate") as record:
        result = generate_round(cfg, run_id, home, round)
        record.complete(result.error_note)
        return result


def generate_round(cfg: SphereConfig, run_id: str, home: Path, round: int = 1) -> GenerateResult:
    """One round of generation for ``run_id`` (the body of the flow, also called per round)."""
    from sphere_core.stages import stages_for

    started, log = time.perf_counter(), _logger()
    warnings = [w for stage in stages_for(cfg.routing.stages) for w in stage.warnings(cfg)]
    for warning in warnings:
        log.warning(warning)
    opts = task_options(cfg, home)
    qkey, n_shards, n_questions, n_rejected = ingest_task.with_options(**opts)(cfg, str(home))
    progress.emit(
        "stage",
        f"ingest: {n_questions} questions in {n_shards} shard(s), {n_rejected} rejected rows",
        stage="ingest",
        done=n_questions,
        total=n_questions,
    )
    plan = plan_run(cfg, qkey, n_shards, round)

    infos = _run_stage_shards(cfg, home, run_id, plan, opts)
    counts = _routing_counts(infos)
    note = check_error_budget(
        counts, cfg.orchestration.max_error_fraction, lambda s: first_error(home, plan, s), run_id
    )  # over it: raises
    if note:
        log.warning("run %s round %d: %s", run_id, round, note)
    refresh = any(info.retried for info in infos)
    pairs = pairs_task.with_options(**opts)(cfg, str(home), run_id, plan, refresh)
    _emit_done(plan, counts, pairs)
    result = GenerateResult(
        run_id=run_id,
        round=round,
        run_dir="",
        questions=n_questions,
        rejected=n_rejected,
        routing_counts=counts,
        pairs_train=pairs["train"],
        pairs_eval=pairs["eval"],
        dropped_pairs=pairs["dropped"],
        warnings=warnings,
        artifact_keys={"questions": qkey, **plan.stages, "pairs": plan.pairs_key},
        search=_search_totals(infos),
        elapsed_s=round_s(time.perf_counter() - started),
        error_note=note,
    )
    result.run_dir = finalize_task.with_options(**opts)(
        cfg, str(home), run_id, plan, result.to_dict()
    )
    publish_artifacts(result, RunView(home, run_id, round))
    return result


def _run_stage_shards(
    cfg: SphereConfig, home: Path, run_id: str, plan: RunPlan, opts: dict[str, Any]
) -> list[Any]:
    """Submit every (shard, stage) task, each after its upstream stage's shard; wait for all
    and return their ``ShardInfo`` (a failed task raises here, after every shard finished)."""
    from sphere_core.stages import stages_for

    stage = stage_task.with_options(**opts)
    futures: dict[tuple[str, int], Any] = {}
    with make_task_runner(cfg) as runner:
        for shard in range(plan.n_shards):
            for s in stages_for(cfg.routing.stages):
                upstream = [futures[(s.consumes.stage, shard)]] if s.consumes else []
                params = {
                    "stage": s.name,
                    "cfg": cfg,
                    "home": str(home),
                    "run_id": run_id,
                    "plan": plan,
                    "shard": shard,
                }
                futures[(s.name, shard)] = runner.submit(stage, params, wait_for=upstream)
        wait(list(futures.values()))
        return [f.result() for f in futures.values()]  # every shard finished; surface failures


def _search_totals(infos: list[Any]) -> dict[str, float]:
    """The search statistics of every computed shard, summed per statistic."""
    search: dict[str, float] = {}
    for info in infos:
        for k, v in info.search.items():
            search[k] = search.get(k, 0) + v
    return search


def _emit_done(plan: RunPlan, counts: list[dict[str, Any]], pairs: dict) -> None:
    """Progress events: each stage's decisions, then the pairs built."""
    for s in plan.stages:
        done = {c["decision"]: c["questions"] for c in counts if c["stage"] == s}
        progress.emit(
            "stage", f"{s} done: {sum(done.values())} questions {done}", stage=s, counts=done
        )
    progress.emit(
        "stage",
        f"pairs: {pairs['train']} train, {pairs['eval']} eval, {len(pairs['dropped'])} dropped",
        stage="pairs",
        done=pairs["train"] + pairs["eval"],
    )


def round_s(seconds: float) -> float:
    return float(f"{seconds:.3f}")


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a flow run context (direct calls)
        return logging.getLogger("sphere.flows")


def _routing_counts(infos: list[Any]) -> list[dict[str, Any]]:
    """Questions per (stage, decision), in stage order then decision name."""
    totals: dict[tuple[str, str], int] = {}
    order: list[str] = []
    for info in infos:
        if info.stage not in order:
            order.append(info.stage)
        for decision, n in info.counts.items():
            totals[(info.stage, decision)] = totals.get((info.stage, decision), 0) + n
    return [
        {"stage": s, "decision": d, "questions": n}
        for (s, d), n in sorted(totals.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1]))
    ]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "run"


def publish_artifacts(result: GenerateResult, view: RunView) -> None:
    """Table artifacts (routing counts per stage, rejected inputs) and a markdown summary."""
    slug = _slug(result.run_id) + ("" if result.round == 1 else f"-round-{result.round}")
    counts = result.routing_counts
    create_table_artifact(
        counts or [{"stage": "-", "decision": "-", "questions": 0}],
        key=f"{slug}-routing",
        description=f"Routing decisions per stage for {result.run_id}",
    )
    rejects = view.rejects()
    rows = rejects[["source", "row", "reason"]].head(200).astype(str).to_dict("records")
    create_table_artifact(
        rows or [{"source": "-", "row": "-", "reason": "no rejected rows"}],
        key=f"{slug}-rejects",
        description=(
            f"Rejected input rows for {result.run_id} ({len(rejects)} in all; first 200 shown)"
        ),
    )
    lines = [
        f"# SPHERE generate: `{result.run_id}` (round {result.round})",
        "",
        f"- questions: **{result.questions}** (rejected rows: {result.rejected})",
        (
            f"- pairs: **{result.pairs_train}** train, **{result.pairs_eval}** eval "
            f"({len(result.dropped_pairs)} dropped)"
        ),
        f"- outputs: `{result.run_dir}`",
        "",
        "| stage | decision | questions |",
        "|---|---|---|",
        *[f"| {c['stage']} | {c['decision']} | {c['questions']} |" for c in counts],
    ]
    create_markdown_artifact("\n".join(lines), key=f"{slug}-summary", description="Run summary")
