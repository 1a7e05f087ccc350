"""The ``pipeline`` flow: generate -> train -> evaluate -> report, each a subflow, under one
run record (running -> completed | failed with the error). Re-running a run id resumes:
finished generate shards are reused from the artifact store.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import prefect_env  # noqa: F401  (offline-safe Prefect settings before prefect)
from flows.common import home_for, new_run_id, resolve_flow_config, tracked_run
from flows.generate import generate_flow


def pair_count(generate_result: Any) -> int:
    """Total pairs reported by the generate flow's summary (0 when unknown)."""
    if isinstance(generate_result, dict):
        pairs = generate_result.get("pairs") or {}
        if isinstance(pairs, dict):
            return int(pairs.get("train") or 0) + int(pairs.get("eval") or 0)
    return 0


def trained_model_path(train_result: Any) -> str | None:
    """The checkpoint the train flow produced (it returns a path or a dict holding one)."""
    if isinstance(train_result, dict):
        for key in ("model_path", "merged_path", "adapter_path", "path", "checkpoint"):
            if train_result.get(key):
                return str(train_result[key])
        return None
    return str(train_result) if train_result else None


@flow(name="pipeline", description="SPHERE end to end: generate pairs -> DPO -> evaluate -> report.")
def pipeline_flow(
    run_id: str | None = None,
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run every stage for ``run_id`` (a new id if None); returns each subflow's result."""
    from flows.evaluate import evaluate_flow
    from flows.report import report_flow
    from flows.train import train_flow

    cfg = resolve_flow_config(config, preset, overrides)
    run_id = run_id or new_run_id()
    home = home_for(cfg)
    cfg_dict = cfg.to_dict()
    with tracked_run(cfg, run_id, home, kind="pipeline"):
        generated = generate_flow(run_id=run_id, config=cfg_dict, track_run=False)
        if pair_count(generated) > 0:
            trained = train_flow(run_id, cfg_dict)
        else:  # nothing to learn from: say so, still evaluate the base model and report
            trained = {"skipped": "no preference pairs were generated (see `sphere routes`)"}
            get_run_logger().warning(
                "run %s produced no preference pairs: DPO training is skipped; evaluating the "
                "base model only. A stronger policy, more questions or a wider search "
                "(search.num_candidates, search.max_depth) yields pairs.", run_id,
            )
        evaluated = evaluate_flow(
            run_id,
            cfg_dict,
            model_path=trained_model_path(trained),
            benchmarks=cfg.evaluation.benchmarks,
            limit=cfg.evaluation.limit,
            benchmark_file=None,
        )
        reported = report_flow(run_id, cfg_dict)
    return {"run_id": run_id, "generate": generated, "train": trained, "evaluate": evaluated, "report": reported}


def build_deployments(preset: str | None = "demo", cron: str | None = "0 3 * * *") -> list[Any]:
    """Runner deployments served by ``sphere serve``: generate, pipeline (on ``cron``), train,
    evaluate, report. Generate/pipeline default to ``preset``; the others need a run id."""
    from flows.evaluate import evaluate_flow
    from flows.report import report_flow
    from flows.train import train_flow

    defaults = {"preset": preset} if preset else {}
    return [
        generate_flow.to_deployment(name="sphere-generate", parameters=defaults, tags=["sphere"]),
        pipeline_flow.to_deployment(
            name="sphere-pipeline", parameters=defaults, cron=cron, tags=["sphere", "scheduled"]
        ),
        train_flow.to_deployment(name="sphere-train", tags=["sphere"]),
        evaluate_flow.to_deployment(name="sphere-evaluate", tags=["sphere"]),
        report_flow.to_deployment(name="sphere-report", tags=["sphere"]),
    ]
