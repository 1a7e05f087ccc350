"""DPO checkpoints: when they are written, which one a re-run resumes from, and which are never
trusted.

The trainer writes ``checkpoints/checkpoint-<step>/`` (transformers' layout: the LoRA adapter,
``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``, ``trainer_state.json``). It saves
every ``training.save_steps`` optimizer steps (default: after the first step ending a minute or
more after the last checkpoint, so a kill loses about a minute of work on any device; besides
the trainer's own saves at evaluations), and once more when a stop is requested
(:mod:`sphere_core.interrupts`), and keeps ``training.save_total_limit`` of them (the best
one as well, with an eval split).

After a checkpoint is fully written, :class:`CheckpointCallback` adds ``sphere_checkpoint.json``
(the training key and the step). A re-run of the same training (same key) resumes from the
newest checkpoint that has the marker *and* every file a resume reads; a checkpoint cut short
by a kill, or one written for another key (other pairs, config or policy weights), is removed
before training starts and never resumed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from sphere_core import interrupts

log = logging.getLogger(__name__)

MARKER = "sphere_checkpoint.json"
"""Written into a checkpoint dir after the trainer finished writing it."""
REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")
"""Files a resume reads besides the weights (``adapter_model.safetensors`` or
``model.safetensors``)."""
WEIGHTS = ("adapter_model.safetensors", "model.safetensors")
SCHEDULE_SETTINGS = ("save_steps", "save_total_limit")
"""Training settings that decide when checkpoints are written, not what is learned."""
SAVE_EVERY_S = 60.0
"""``training.save_steps: null``: a checkpoint after the first step a minute past the last one."""
_NAME = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int | None:
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def problem(path: Path, key: str) -> str | None:
    """Why checkpoint dir ``path`` cannot be resumed for training ``key`` (None: it can)."""
    path = Path(path)
    step = step_of(path)
    if step is None or not path.is_dir():
        return "not a checkpoint dir"
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return f"no {MARKER} (cut short before the save finished)"
    if marker.get("key") != key:
        return "written for another training key"
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if not any((path / name).is_file() for name in WEIGHTS):
        missing.append("weights")
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "unreadable trainer_state.json"
    if state.get("global_step") != step:
        return f"trainer_state.json says step {state.get('global_step')}"
    return None


def prepare(directory: Path, key: str) -> Path | None:
    """Remove the checkpoints of ``directory`` that cannot be resumed for ``key``; return the
    newest one that can (None: start from step 0)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    usable: list[tuple[int, Path]] = []
    for path in sorted(directory.iterdir()):
        step = step_of(path)
        if step is None:
            continue
        why = problem(path, key)
        if why is None:
            usable.append((step, path))
            continue
        log.warning("checkpoint %s is not resumed (%s): removed", path, why)
        shutil.rmtree(path, ignore_errors=True)
    return max(usable)[1] if usable else None


def write_marker(path: Path, key: str, step: int) -> None:
    path = Path(path)
    tmp = path / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({"key": key, "step": step}))
    tmp.replace(path / MARKER)


def due(save_steps: int | None, step: int, since_save_s: float) -> bool:
    """Whether the schedule asks for a checkpoint after optimizer step ``step``."""
    if save_steps is None:
        return since_save_s >= SAVE_EVERY_S
    return bool(save_steps) and step % save_steps == 0


def checkpoint_callback(key: str, save_steps: int | None):
    """A ``TrainerCallback``: saves on the ``save_steps`` schedule and when a stop is requested
    (then ends training), and marks each finished checkpoint with ``key``."""
    from transformers import TrainerCallback

    class CheckpointCallback(TrainerCallback):
        def __init__(self) -> None:
            self.last_save = time.monotonic()
            self.stopped_at: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if due(save_steps, state.global_step, time.monotonic() - self.last_save):
                control.should_save = True
            if interrupts.stop_requested():
                control.should_save = True
                control.should_training_stop = True
                self.stopped_at = state.global_step
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir():
                write_marker(path, key, state.global_step)
            return control

    return CheckpointCallback()


def default_key(cfg, train_path: Path, eval_path: Path | None, granularities=None) -> str:
    """A training key when the caller gives none: the pairs files' contents, the granularities,
    the training config (without the checkpoint schedule) and the policy."""
    files = [
        hashlib.sha256(Path(p).read_bytes()).hexdigest() if p and Path(p).is_file() else None
        for p in (train_path, eval_path)
    ]
    training = {k: v for k, v in cfg.to_dict()["training"].items() if k not in SCHEDULE_SETTINGS}
    record = {
        "files": files,
        "granularities": list(granularities) if granularities else None,
        "training": training,
        "policy": cfg.models.policy.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def space_needed(model, training) -> int:
    """Bytes the checkpoints of a run take at most: trainable weights (float32) and two Adam
    moments per checkpoint kept (plus the best one and one being written), with 10% slack."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    kept = training.save_total_limit + 2
    return int(trainable * 4 * 3 * kept * 1.1)


def resume_kwargs(checkpoint: Path | None) -> dict[str, Any]:
    return {"resume_from_checkpoint": str(checkpoint)} if checkpoint else {}
