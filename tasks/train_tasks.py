"""Thin Prefect tasks of the ``train``, ``evaluate`` and ``report`` flows.

Each takes the typed config, ``home``, the run id (and round) and plain values, calls
sphere_core and records the outcome in the store (``sphere_core.storage.run_records``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from sphere_core.config import ModelSpec, SphereConfig
from sphere_core.results import TrainingResult
from tasks.task_options import retry_condition


@task(name="dpo-train", task_run_name="dpo-train-{run_id}", retry_condition_fn=retry_condition)
def train_task(cfg: SphereConfig, home: str, run_id: str, round: int = 1) -> TrainingResult:
    """DPO on the round's pairs -> its model/ dir (reused when already trained with the same
    key)."""
    from dataclasses import asdict

    from sphere_core import evolution
    from sphere_core.storage import keys
    from sphere_core.storage.run_records import record_training
    from sphere_core.storage.run_view import RunView
    from sphere_core.training.claim import training_claim
    from sphere_core.training.dpo import train_dpo

    view = RunView(Path(home), run_id, round)
    key = keys.training_key(cfg, view.plan.pairs_key)
    with training_claim(view.model_dir(), f"run {run_id} round {round}"):  # one trainer at a time
        if done := evolution.finished_training(view.model_dir(), key):
            return TrainingResult(**{k: v for k, v in done.items() if k != "key"})
        result = train_dpo(
            cfg,
            view.pairs_path("train"),
            view.pairs_path("eval"),
            view.model_dir(),
            Path(home),
            key=key,
        )
        if result.merged_dir:
            keys.write_weights_record(result.merged_dir, cfg.models.policy.path, result.adapter_dir)
        record_training(cfg, Path(home), run_id, result, round)
        out = TrainingResult(
            run_id,
            round,
            str(result.adapter_dir),
            str(result.merged_dir or "") or None,
            result.best_checkpoint,
            result.metrics,
        )
        evolution.mark_trained(view.model_dir(), key, asdict(out))
    return out


@task(
    name="evaluate",
    task_run_name="evaluate-{label}-{benchmark}",
    retry_condition_fn=retry_condition,
)
def evaluate_task(
    cfg: SphereConfig,
    home: str,
    run_id: str,
    label: str,
    spec: ModelSpec,
    benchmark: str,
    limit: int | None,
    benchmark_file: str | None,
    out_dir: str,
    round: int = 1,
) -> list[dict]:
    """One model on one benchmark: per-item Parquet under ``out_dir``, summary in the store."""
    from sphere_core.evaluation.runner import evaluate_model
    from sphere_core.storage.run_records import record_evaluation

    _, summary = evaluate_model(
        cfg, label, spec, benchmark, limit, benchmark_file, home=Path(home), out_dir=Path(out_dir)
    )
    record_evaluation(
        cfg,
        Path(home),
        run_id,
        summary,
        round=round,
        details={
            "model": spec.model_dump(mode="json"),
            "benchmark_file": benchmark_file,
            "greedy": cfg.evaluation.greedy,
        },
    )
    return summary.to_dict(orient="records")


@task(name="report", task_run_name="report-{run_id}", retry_condition_fn=retry_condition)
def report_task(cfg: SphereConfig, home: str, run_id: str) -> dict:
    """Build runs/<run_id>/report.md + PNGs; returns the path, text and accuracy rows."""
    from sphere_core.evaluation.report import accuracy_rows, build_report
    from sphere_core.storage.run_records import open_store

    with open_store(cfg, Path(home)) as repo:
        path = build_report(run_id, Path(home), repo)
        rows = accuracy_rows(repo.evaluations_for_run(run_id))
    return {"path": str(path), "markdown": path.read_text(), "accuracy": rows}
