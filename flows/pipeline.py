"""The ``pipeline`` flow: per round generate -> train -> evaluate (a ``round-<r>`` subflow), then
the report, under one run record (running -> completed | failed | cancelled).

Round r searches with pi_r (round 1: the configured policy; later rounds: the merged model
trained in round r-1), trains DPO from pi_r with pi_r as the reference, and evaluates pi_r
against pi_{r+1}. Re-running a run id resumes: finished shards, pairs and trained models are
reused (``sphere_core.evolution``).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.evaluate import evaluate_flow
from flows.generate import generate_flow
from flows.report_flow import report_flow
from flows.run_tracking import flow_config, flow_run_id, home_for, tracked_run
from flows.train import train_flow
from sphere_core import progress
from sphere_core.config import SphereConfig
from sphere_core.error_budget import combine_notes
from sphere_core.results import PipelineResult, RoundResult, TrainingResult


@flow(
    name="round",
    flow_run_name="round-{round}",
    description="One self-evolution round: generate -> DPO -> evaluate.",
)
def round_flow(run_id: str, config: SphereConfig, round: int = 1) -> RoundResult:
    """Generate pairs with this round's policy, train on them, evaluate base vs trained."""
    cfg = flow_config(config)
    generated = generate_flow(run_id=run_id, config=cfg, track_run=False, round=round)
    if generated.pairs > 0:
        trained = train_flow(run_id, cfg, round=round)
    else:  # nothing to learn from: say so, still evaluate the base model and report
        trained = TrainingResult(
            run_id, round, skipped="no preference pairs were generated (see `sphere routes`)"
        )
        get_run_logger().warning(
            "run %s round %d produced no preference pairs: DPO training is skipped; evaluating the "
            "base model only. A stronger policy, more questions or a wider search "
            "(search.num_candidates, search.max_depth) yields pairs.",
            run_id,
            round,
        )
        progress.emit("info", f"round {round}: no preference pairs, DPO skipped", stage="train")
    evaluated = evaluate_flow(run_id, cfg, model_path=trained.adapter_path, round=round)
    return RoundResult(round, generated, trained, evaluated)


@flow(
    name="pipeline",
    description="SPHERE end to end: generate pairs -> DPO -> evaluate (per round) -> report.",
)
def pipeline_flow(
    run_id: str | None = None,
    config: SphereConfig | dict[str, Any] | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> PipelineResult:
    """Run every round and the report for ``run_id`` (a new id if None)."""
    from sphere_core.evolution import round_config

    cfg = flow_config(config, preset, overrides)
    run_id = flow_run_id(run_id)
    home = home_for(cfg)
    rounds: list[RoundResult] = []
    with tracked_run(cfg, run_id, home, kind="pipeline", rounds=cfg.evolution.rounds) as record:
        for r in range(1, cfg.evolution.rounds + 1):
            record.reached_round(r)
            previous = rounds[-1].train if rounds else None
            rounds.append(round_flow(run_id, round_config(cfg, r, previous, home, run_id), round=r))
        record.complete(combine_notes([r.generate.error_note for r in rounds]))  # report sees it
        report = report_flow(run_id, cfg)
    return PipelineResult(run_id, rounds, report, status="completed")


def build_deployments(preset: str | None = "demo", cron: str | None = "0 3 * * *") -> list[Any]:
    """Runner deployments served by ``sphere serve``: generate, pipeline (on ``cron``), train,
    evaluate, report. Generate/pipeline default to ``preset``; the others need a run id."""
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
