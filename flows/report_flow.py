"""The ``report`` flow: runs/<run_id>/report.md + PNGs, published as Prefect artifacts
(the report as markdown, the accuracies as a table). Owns wiring only.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.run_tracking import flow_config, flow_run_id, home_for
from sphere_core.config import SphereConfig
from sphere_core.results import ReportResult
from tasks.task_options import task_options
from tasks.train_tasks import report_task


def artifact_slug(run_id: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-") or "run"


@flow(name="report", description="Run report: routing, pairs, DPO loss, base vs trained accuracy.")
def report_flow(run_id: str, config: SphereConfig | dict[str, Any] | None = None) -> ReportResult:
    """Build the report; returns its path and the number of accuracy rows published."""
    cfg = flow_config(config, run_id=run_id)
    home = home_for(cfg)
    run_id = flow_run_id(run_id)
    result = report_task.with_options(**task_options(cfg, home))(cfg, str(home), run_id)
    slug = artifact_slug(run_id)
    create_markdown_artifact(
        markdown=result["markdown"],
        key=f"sphere-report-{slug}",
        description=f"SPHERE report of run {run_id} ({result['path']})",
    )
    if result["accuracy"]:
        create_table_artifact(
            table=result["accuracy"],
            key=f"sphere-accuracy-{slug}",
            description=f"Evaluation metrics of run {run_id}",
        )
    return ReportResult(run_id, result["path"], len(result["accuracy"]))
