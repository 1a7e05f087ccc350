"""The ``evaluate`` flow: Pass@1 and two-turn self-correction of base vs trained models.

With a run id: the round's base policy (``evaluation.compare_base``) and the trained model
(``model_path``, else the round's ``model/adapter``), per-item Parquet under
``<round dir>/eval/<label>/<benchmark>.parquet``. Without a run id (``sphere evaluate --model``):
the given model only, under ``$SPHERE_HOME/evals/<eval-id>/``, recorded as its own run.
Every model is a ``ModelSpec`` built through the backend registry on the configured backend.
One task per model and benchmark (``evaluate-trained-gsm8k``). Owns wiring only.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.run_tracking import flow_config, flow_run_id, home_for, tracked_run
from sphere_core.backends.adapters import is_adapter_dir
from sphere_core.config import ModelSpec, SphereConfig
from sphere_core.errors import EvaluationError
from sphere_core.evaluation.model_specs import model_spec
from sphere_core.paths import validate_name
from sphere_core.results import EvaluationResult
from sphere_core.storage.run_records import ensure_run
from sphere_core.storage.run_view import RunView
from tasks.task_options import task_options
from tasks.train_tasks import evaluate_task


def _label(path: str) -> str:
    """A model label (a directory name) derived from a model path."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).name or "model").strip("-.") or "model"
    return validate_name(name[:64], "model label")


@flow(name="evaluate", description="Pass@1 and self-correction accuracy, base vs trained.")
def evaluate_flow(
    run_id: str | None = None,
    config: SphereConfig | dict[str, Any] | None = None,
    model_path: str | None = None,
    benchmarks: list[str] | None = None,
    limit: int | None = None,
    benchmark_file: str | None = None,
    round: int = 1,
) -> EvaluationResult:
    """Evaluate and record; returns the run id, the output dir and the summary rows."""
    cfg = flow_config(config, run_id=run_id)
    home = home_for(cfg)
    benches = (
        [_label(Path(benchmark_file).stem)]
        if benchmark_file
        else list(benchmarks or cfg.evaluation.benchmarks)
    )
    limit = limit if limit is not None else cfg.evaluation.limit
    if run_id is None:
        if not model_path:
            raise EvaluationError("evaluate needs a run id (--run) or a model path (--model)")
        run_id = f"eval-{datetime.now():%Y%m%d-%H%M%S}-{_label(model_path)}"
        models = [(_label(model_path), model_spec(cfg, model_path))]
        out_dir = home / "evals" / run_id
        with tracked_run(cfg, run_id, home, kind="evaluate"):
            rows = _run(cfg, home, run_id, models, benches, limit, benchmark_file, out_dir, round)
        return EvaluationResult(run_id, str(out_dir), rows)
    run_id = flow_run_id(run_id)
    view = RunView(home, run_id, round)
    models: list[tuple[str, ModelSpec]] = []
    if cfg.evaluation.compare_base:
        models.append(("base", cfg.models.policy))
    trained = model_path or view.model_dir() / "adapter"
    if model_path or is_adapter_dir(trained):
        models.append(("trained", model_spec(cfg, trained)))
    else:
        get_run_logger().warning(
            "run %s has no trained adapter at %s: evaluating the base only", run_id, trained
        )
    if not models:
        raise EvaluationError(
            f"nothing to evaluate for run {run_id}: no trained model and compare_base off"
        )
    ensure_run(cfg, home, run_id, kind="evaluate")
    out_dir = view.dir / "eval"
    rows = _run(cfg, home, run_id, models, benches, limit, benchmark_file, out_dir, round)
    return EvaluationResult(run_id, str(out_dir), rows)


def _run(cfg, home, run_id, models, benches, limit, benchmark_file, out_dir, round) -> list[dict]:
    task = evaluate_task.with_options(**task_options(cfg, home))
    rows: list[dict] = []
    for label, spec in models:  # sequential: each model occupies the accelerator
        for bench in benches:
            rows += task(
                cfg,
                str(home),
                run_id,
                label,
                spec,
                bench,
                limit,
                benchmark_file,
                str(out_dir),
                round,
            )
    return rows
