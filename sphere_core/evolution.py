"""Self-evolution rounds: the model trained in round r-1 becomes round r's policy.

Owns the per-round config (which questions, which policy, which pi_small), the identity of a
trained model's weights (so artifact keys of later rounds change whenever the weights do) and
the "already trained" marker that lets a resumed run skip finished training.

Round r (1-based) searches with pi_r: round 1 uses ``models.policy``; round r > 1 uses the
merged model written by round r-1's DPO (``training.save_merged`` is switched on for every
round that has a successor). DPO in round r starts from pi_r with pi_r as the reference.
pi_small stays as configured unless ``evolution.evolve_small``. Questions: ``same`` gives every
round the same slice (``questions_per_round`` or ``data.limit``); ``fresh`` gives round r the
r-th slice of the question file (``data.offset`` moves by the slice size each round).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sphere_core.config import SphereConfig
from sphere_core.errors import TrainingError

WEIGHTS_RECORD = "sphere_weights.json"
"""Written into a merged model dir: what the weights are (base + adapter checksum)."""
TRAINED_RECORD = "sphere_trained.json"
"""Written into a round's model dir when DPO finished: the training key and its result."""


def round_config(cfg: SphereConfig, round: int, previous: Any, home: Path, run_id: str) -> SphereConfig:
    """The config of round ``round`` (``previous``: round r-1's TrainingResult or None)."""
    evo = cfg.evolution
    tree = cfg.to_dict()
    size = evo.questions_per_round or cfg.data.limit
    if size is not None:
        tree["data"]["limit"] = size
        if evo.question_schedule == "fresh":
            tree["data"]["offset"] = cfg.data.offset + (round - 1) * size
    if round < evo.rounds:
        tree["training"]["save_merged"] = True  # the next round's policy
    if round > 1 and previous is not None and previous.merged_path:
        policy = {**tree["models"]["policy"], "path": previous.merged_path, "adapter": None}
        if evo.evolve_small:
            tree["models"]["small"] = dict(policy)
        elif tree["models"]["small"] is None:  # keep pi_small = the original policy, not pi_r
            tree["models"]["small"] = dict(tree["models"]["policy"])
        tree["models"]["policy"] = policy
    elif round > 1 and previous is not None and previous.skipped is None:
        raise TrainingError(f"run {run_id} round {round - 1} trained no merged model to continue from")
    return SphereConfig.model_validate(tree)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_weights_record(merged_dir: Path, base: str, adapter_dir: Path) -> None:
    """Record what a merged model is made of (read by :func:`weights_id`)."""
    adapter = Path(adapter_dir) / "adapter_model.safetensors"
    record = {"base": base, "adapter_sha256": file_sha256(adapter) if adapter.is_file() else None}
    (Path(merged_dir) / WEIGHTS_RECORD).write_text(json.dumps(record, indent=2))


def weights_id(path: str) -> str | None:
    """Content id of a merged model dir (None for other model paths, which are keyed by path)."""
    record = Path(path).expanduser() / WEIGHTS_RECORD
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def training_key(cfg: SphereConfig, pairs_key: str) -> str:
    """What decides a round's DPO result: the pairs, the training config and the policy weights."""
    from sphere_core.storage.artifacts import artifact_key

    policy = cfg.models.policy
    config = {"training": cfg.to_dict()["training"], "policy": policy.model_dump(mode="json"),
              "weights": weights_id(policy.path)}
    return artifact_key("train", config, [pairs_key])


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
