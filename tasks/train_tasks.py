"""Thin Prefect tasks of the ``train``, ``evaluate`` and ``report`` flows.

Each takes the config dict, ``home`` and paths (never live models), calls sphere_core and
records the outcome in the store (checkpoints, evaluations). Retries come from
``cfg.orchestration`` via ``tasks.common.task_options``; user errors are not retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from sphere_core.config import config_from_dict
from sphere_core.paths import run_dir
from tasks.common import retry_condition


def _repo(cfg, home: Path):
    from sphere_core.storage.repo import open_repository

    return open_repository(cfg.storage.database_url, home)


def ensure_run(cfg, home: Path, run_id: str, kind: str) -> None:
    """Record ``run_id`` in the store when it has no record yet (evaluations need one)."""
    repo = _repo(cfg, home)
    if repo.get_run(run_id) is None:
        repo.create_run(run_id, cfg.to_dict(), cfg.config_hash(), kind=kind)


@task(name="dpo-train", task_run_name="dpo-train-{run_id}", retry_condition_fn=retry_condition)
def train_task(config: dict[str, Any], home: str, run_id: str) -> dict[str, Any]:
    """DPO on runs/<run_id>/pairs -> runs/<run_id>/model/; records the checkpoint(s)."""
    from sphere_core.training.dpo import train_dpo

    cfg = config_from_dict(config)
    run = run_dir(Path(home), run_id)
    result = train_dpo(cfg, run / "pairs" / "train.parquet", run / "pairs" / "eval.parquet",
                       run / "model", Path(home))
    ensure_run(cfg, Path(home), run_id, kind="train")
    repo = _repo(cfg, Path(home))
    summary = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, bool))}
    repo.record_checkpoint(run_id, result.adapter_dir, "adapter",
                           {**summary, "best_checkpoint": result.best_checkpoint})
    if result.merged_dir:
        repo.record_checkpoint(run_id, result.merged_dir, "merged", summary)
    get_run_logger().info("trained on %s pairs; adapter at %s", result.metrics.get("n_train"), result.adapter_dir)
    return {
        "run_id": run_id,
        "adapter_path": str(result.adapter_dir),
        "merged_path": str(result.merged_dir) if result.merged_dir else None,
        "best_checkpoint": result.best_checkpoint,
        "metrics": summary,
    }


@task(name="evaluate", task_run_name="evaluate-{label}-{benchmark}", retry_condition_fn=retry_condition)
def evaluate_task(
    config: dict[str, Any], home: str, run_id: str, label: str, model_path: str,
    adapter_dir: str | None, benchmark: str, limit: int | None, benchmark_file: str | None,
    out_dir: str,
) -> list[dict[str, Any]]:
    """One model on one benchmark: per-item Parquet under ``out_dir``, summary in the store."""
    from sphere_core.evaluation.runner import evaluate, record_summary

    cfg = config_from_dict(config)
    logger = get_run_logger()
    _, summary = evaluate(
        cfg, label, model_path, Path(adapter_dir) if adapter_dir else None, [benchmark], limit,
        benchmark_file, home=Path(home), out_dir=Path(out_dir), progress=logger.info,
    )
    record_summary(_repo(cfg, Path(home)), run_id, summary,
                   details={"model_path": model_path, "adapter_dir": adapter_dir,
                            "benchmark_file": benchmark_file, "greedy": cfg.evaluation.greedy})
    return summary.to_dict(orient="records")


@task(name="report", task_run_name="report-{run_id}", retry_condition_fn=retry_condition)
def report_task(config: dict[str, Any], home: str, run_id: str) -> dict[str, Any]:
    """Build runs/<run_id>/report.md + PNGs; returns the path, text and accuracy rows."""
    from sphere_core.evaluation.report import accuracy_rows, build_report

    cfg = config_from_dict(config)
    repo = _repo(cfg, Path(home))
    path = build_report(run_id, Path(home), repo)
    return {"path": str(path), "markdown": path.read_text(),
            "accuracy": accuracy_rows(repo.evaluations_for_run(run_id))}
