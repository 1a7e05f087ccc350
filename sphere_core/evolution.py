"""Self-evolution rounds: the model trained in round r-1 becomes round r's policy.

Owns the per-round config (which questions, which policy, which pi_small) and the "already
trained" marker that lets a resumed run skip finished training. The identity of a trained
model's weights (``weights_id``, so that artifact keys of later rounds change whenever the
weights do) and the training key live with every other key in ``sphere_core.storage.keys``.

Round r (1-based) searches with pi_r: round 1 uses ``models.policy``; round r > 1 uses the
merged model written by round r-1's DPO (``training.save_merged`` is switched on for every
round that has a successor). DPO in round r starts from pi_r with pi_r as the reference.
pi_small stays as configured unless ``evolution.evolve_small``. Questions: ``same`` gives every
round the same slice (``questions_per_round`` or ``data.limit``); ``fresh`` gives round r the
r-th slice of the question file (``data.offset`` moves by the slice size each round).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sphere_core.config import SphereConfig, resolve_config
from sphere_core.errors import TrainingError

TRAINED_RECORD = "sphere_trained.json"
"""Written into a round's model dir when DPO finished: the training key and its result."""


def round_config(
    cfg: SphereConfig, round_no: int, previous: Any, home: Path, run_id: str
) -> SphereConfig:
    """The config of round ``round_no`` (``previous``: round r-1's TrainingResult or None)."""
    evo = cfg.evolution
    tree = cfg.to_dict()
    size = evo.questions_per_round or cfg.data.limit
    if size is not None:
        tree["data"]["limit"] = size
        if evo.question_schedule == "fresh":
            tree["data"]["offset"] = cfg.data.offset + (round_no - 1) * size
    if round_no < evo.rounds:
        tree["training"]["save_merged"] = True  # the next round's policy
    if round_no > 1 and previous is not None and previous.merged_path:
        policy = {**tree["models"]["policy"], "path": previous.merged_path, "adapter": None}
        if evo.evolve_small:
            tree["models"]["small"] = dict(policy)
        elif tree["models"]["small"] is None:  # keep pi_small = the original policy, not pi_r
            tree["models"]["small"] = dict(tree["models"]["policy"])
        tree["models"]["policy"] = policy
    elif round_no > 1 and previous is not None and previous.skipped is None:
        raise TrainingError(
            f"run {run_id} round {round_no - 1} trained no merged model to continue from"
        )
    return resolve_config(base=tree)


def finished_training(model_dir: Path, key: str) -> dict[str, Any] | None:
    """The recorded result of a finished training with ``key`` in ``model_dir`` (else None)."""
    try:
        record = json.loads((Path(model_dir) / TRAINED_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key or not Path(record.get("adapter_dir", "")).is_dir():
        return None
    return record


def mark_trained(model_dir: Path, key: str, result: dict[str, Any]) -> None:
    path = Path(model_dir) / TRAINED_RECORD
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"key": key, **result}, indent=2, default=str))
    tmp.replace(path)
