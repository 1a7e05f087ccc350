"""The ``train`` flow: DPO (TRL + PEFT LoRA) on a run's pairs -> the round's ``model/`` dir.

Records the adapter (and merged model) as checkpoints of the run. Owns wiring only.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.run_tracking import flow_config, flow_run_id, home_for
from sphere_core.config import SphereConfig
from sphere_core.results import TrainingResult
from tasks.task_options import task_options
from tasks.train_tasks import train_task


@flow(name="train", description="DPO with a LoRA adapter on the run's preference pairs.")
def train_flow(
    run_id: str, config: SphereConfig | dict[str, Any] | None = None, round: int = 1
) -> TrainingResult:
    """Train on the pairs of ``run_id`` (round ``round``); returns the adapter and metrics."""
    cfg = flow_config(config, run_id=run_id)
    home = home_for(cfg)
    return train_task.with_options(**task_options(cfg, home))(
        cfg, str(home), flow_run_id(run_id), round
    )
