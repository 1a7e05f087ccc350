"""The ``evaluate`` flow: Pass@1 and two-turn self-correction of base vs trained models.

With a run id: the base policy (``evaluation.compare_base``) and the trained model
(``model_path``, else ``runs/<id>/model/adapter``), per-item Parquet under
``runs/<id>/eval/<label>/<benchmark>.parquet``. Without a run id (``sphere evaluate --model``):
the given model only, under ``$SPHERE_HOME/evals/<eval-id>/``, recorded as its own run.
One task per model and benchmark (``evaluate-trained-gsm8k``). Owns wiring only.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows import prefect_env  # noqa: F401  (offline-safe Prefect settings before prefect)
from flows.common import home_for, resolve_flow_config, tracked_run
from sphere_core.config import SphereConfig
from sphere_core.errors import EvaluationError
from sphere_core.evaluation.models import is_adapter_dir
from sphere_core.paths import run_dir
from tasks.common import task_options
from tasks.train_tasks import ensure_run, evaluate_task


def model_entry(cfg: SphereConfig, model_path: str) -> tuple[str, str | None]:
    """(weights path, adapter dir | None): an adapter dir is applied on top of the policy."""
    if is_adapter_dir(model_path):
        return cfg.models.policy.path, str(model_path)
    return str(model_path), None


def _label(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).name or "model").strip("-") or "model"


@flow(name="evaluate", description="Pass@1 and self-correction accuracy, base vs trained.")
def evaluate_flow(
    run_id: str | None = None,
    config: dict[str, Any] | None = None,
    model_path: str | None = None,
    benchmarks: list[str] | None = None,
    limit: int | None = None,
    benchmark_file: str | None = None,
) -> dict[str, Any]:
    """Evaluate and record; returns run_id, out_dir and the summary rows."""
    cfg = resolve_flow_config(config)
    home = home_for(cfg)
    benches = [Path(benchmark_file).stem] if benchmark_file else list(benchmarks or cfg.evaluation.benchmarks)
    limit = limit if limit is not None else cfg.evaluation.limit
    if run_id is None:
        if not model_path:
            raise EvaluationError("evaluate needs a run id (--run) or a model path (--model)")
        run_id = f"eval-{datetime.now():%Y%m%d-%H%M%S}-{_label(model_path)}"
        models = [(_label(model_path), *model_entry(cfg, model_path))]
        out_dir = home / "evals" / run_id
        with tracked_run(cfg, run_id, home, kind="evaluate"):
            summary = _run(cfg, home, run_id, models, benches, limit, benchmark_file, out_dir)
    else:
        models = []
        if cfg.evaluation.compare_base:
            models.append(("base", cfg.models.policy.path, None))
        trained = model_path or run_dir(home, run_id) / "model" / "adapter"
        if model_path or is_adapter_dir(trained):
            models.append(("trained", *model_entry(cfg, str(trained))))
        else:
            get_run_logger().warning("run %s has no trained adapter at %s: evaluating the base only",
                                     run_id, trained)
        if not models:
            raise EvaluationError(f"nothing to evaluate for run {run_id}: no trained model and compare_base off")
        ensure_run(cfg, home, run_id, kind="evaluate")
        out_dir = run_dir(home, run_id) / "eval"
        summary = _run(cfg, home, run_id, models, benches, limit, benchmark_file, out_dir)
    return {"run_id": run_id, "out_dir": str(out_dir), "summary": summary}


def _run(cfg, home, run_id, models, benches, limit, benchmark_file, out_dir) -> list[dict]:
    cfg_dict = cfg.to_dict()
    task = evaluate_task.with_options(**task_options(cfg_dict, home))
    rows: list[dict] = []
    for label, path, adapter in models:  # sequential: each model occupies the accelerator
        for bench in benches:
            rows += task(cfg_dict, str(home), run_id, label, path, adapter, bench, limit,
                         benchmark_file, str(out_dir))
    return rows
