"""The ``train`` flow: DPO (TRL + PEFT LoRA) on runs/<run_id>/pairs -> runs/<run_id>/model/.

Records the adapter (and merged model) as checkpoints of the run. Owns wiring only.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import prefect_env  # noqa: F401  (offline-safe Prefect settings before prefect)
from flows.common import home_for, resolve_flow_config
from tasks.common import task_options
from tasks.train_tasks import train_task


@flow(name="train", description="DPO with a LoRA adapter on the run's preference pairs.")
def train_flow(run_id: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on ``runs/<run_id>/pairs``; returns adapter_path, merged_path, best_checkpoint, metrics."""
    cfg = resolve_flow_config(config)
    home = home_for(cfg)
    cfg_dict = cfg.to_dict()
    return train_task.with_options(**task_options(cfg_dict, home))(cfg_dict, str(home), run_id)
