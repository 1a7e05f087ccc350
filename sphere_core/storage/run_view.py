"""The run view: a manifest of the artifacts one round of a run used, and its reader.

``runs/<run_id>/outputs.json`` (later rounds: ``runs/<run_id>/round-<r>/``) points at the
content-addressed artifacts of ``run_outputs.py``: no second copy of trees or routing. Only the
pairs are materialised as files (``pairs/train.parquet``, ``pairs/eval.parquet``), the product
TRL and ``datasets`` read. :func:`publish_view` writes a round's view; :class:`RunView` reads it
back for the report, the CLI and training. Re-running a run id with another config rewrites the
view, so outputs of stages that no longer apply disappear from it (the flow prunes the store the
same way).

This module depends on ``run_outputs.py`` (plan, output names), never the other way round.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_core.errors import ArtifactError, RunNotFoundError
from sphere_core.paths import run_dir
from sphere_core.schemas import (
    PAIR_COLUMNS,
    QUESTION_COLUMNS,
    REJECT_COLUMNS,
    ROUTING_COLUMNS,
    TREE_COLUMNS,
)
from sphere_core.storage.artifacts import ArtifactStore
from sphere_core.storage.run_outputs import (
    PAIRS,
    QUESTIONS,
    REJECTS,
    RunOutputs,
    RunPlan,
    concat,
    empty_frame,
    routing_output,
    tree_output,
)

VIEW_FILE = "outputs.json"


def publish_view(
    outputs: RunOutputs, run_id: str, plan: RunPlan, extra: dict[str, Any] | None = None
) -> Path:
    """Write the run view (manifest of artifact pointers) and the pairs files; returns its
    dir."""
    from sphere_core.pairs import write_pairs_file

    view = RunView(outputs.home, run_id, plan.round)
    pointers = {
        "questions": _pointer(QUESTIONS, plan.questions_key),
        "rejects": _pointer(REJECTS, plan.questions_key),
        "stages": {
            s: {"tree": _pointer(tree_output(s), k), "routing": _pointer(routing_output(s), k)}
            for s, k in plan.stages.items()
        },
        "pairs": {split: _pointer(name, plan.pairs_key) for split, name in PAIRS.items()},
    }
    for split in PAIRS:
        write_pairs_file(outputs.read_pairs(plan, split, run_id), view.pairs_path(split))
    record = {
        "run_id": run_id,
        "round": plan.round,
        "plan": plan.to_dict(),
        "outputs": pointers,
        **(extra or {}),
    }
    _write_json(view.dir / VIEW_FILE, record)
    return view.dir


def _pointer(output: str, key: str) -> dict[str, str]:
    return {"output": output, "key": key}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def round_dir(home: Path, run_id: str, round_no: int = 1) -> Path:
    """Where round ``round_no`` of a run keeps its view, pairs and model (round 1: the run dir)."""
    base = run_dir(Path(home), run_id)
    return base if round_no == 1 else base / f"round-{round_no}"


class RunView:
    """Read-only access to the outputs of one round of a run (every stage that ran)."""

    def __init__(self, home: Path, run_id: str, round_no: int = 1):
        self.home, self.run_id, self.round = Path(home), run_id, round_no
        self.dir = round_dir(self.home, run_id, round_no)
        self._store = ArtifactStore(self.home)
        self._record: dict[str, Any] | None = None

    @property
    def exists(self) -> bool:
        return (self.dir / VIEW_FILE).is_file()

    @property
    def record(self) -> dict[str, Any]:
        if self._record is None:
            path = self.dir / VIEW_FILE
            try:
                self._record = json.loads(path.read_text())
            except FileNotFoundError:
                raise RunNotFoundError(
                    f"run {self.run_id!r} has no generate outputs yet ({path} is missing)"
                ) from None
            except (OSError, ValueError) as err:
                raise ArtifactError(f"cannot read the run view {path}: {err}") from err
        return self._record

    @property
    def plan(self) -> RunPlan:
        return RunPlan.from_dict(self.record["plan"])

    def stages(self) -> list[str]:
        """The stages this round ran, in run order."""
        return list(self.record["outputs"]["stages"])

    def _read(
        self, pointer: dict[str, str], columns: list[str], stamp: bool = True
    ) -> pd.DataFrame:
        frame = self._store.read_stage(pointer["output"], pointer["key"])
        if frame.empty:
            frame = empty_frame(columns)
        return frame.assign(run_id=self.run_id) if stamp and "run_id" in columns else frame

    def questions(self) -> pd.DataFrame:
        return self._read(self.record["outputs"]["questions"], QUESTION_COLUMNS)

    def rejects(self) -> pd.DataFrame:
        return self._read(self.record["outputs"]["rejects"], REJECT_COLUMNS)

    def routing(self, stage: str | None = None) -> pd.DataFrame:
        stages = self.record["outputs"]["stages"]
        chosen = [stage] if stage else list(stages)
        return concat(
            [self._read(stages[s]["routing"], ROUTING_COLUMNS) for s in chosen if s in stages],
            ROUTING_COLUMNS,
        )

    def tree(self, stage: str | None = None) -> pd.DataFrame:
        stages = self.record["outputs"]["stages"]
        chosen = [stage] if stage else list(stages)
        return concat(
            [self._read(stages[s]["tree"], TREE_COLUMNS) for s in chosen if s in stages],
            TREE_COLUMNS,
        )

    def pairs(self, split: str | None = None) -> pd.DataFrame:
        splits = [split] if split else list(PAIRS)
        frames = [
            pd.read_parquet(self.pairs_path(s)) for s in splits if self.pairs_path(s).is_file()
        ]
        return concat(frames, PAIR_COLUMNS)

    def pairs_path(self, split: str) -> Path:
        return self.dir / "pairs" / f"{split}.parquet"

    def model_dir(self) -> Path:
        return self.dir / "model"

    def summary(self) -> dict[str, Any]:
        """The generate summary stored with the view (routing counts, pairs, search stats)."""
        return dict(self.record.get("summary", {}))

    def train_log(self) -> dict[str, Any] | None:
        path = self.model_dir() / "train_log.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
