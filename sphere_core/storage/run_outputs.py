"""A generate run's outputs: keys, shards, pairs and evaluations (path from key).

**Keys.** Every output is a content-addressed artifact
``$SPHERE_HOME/artifacts/<output>/<key>/part-<shard>.parquet`` (see ``artifacts.py``); the
keys are computed in ``keys.py``. The questions key hashes the ingest config and the input
file's content; a stage's key hashes ``Stage.artifact_config`` and its input keys; the pairs
key hashes the pairs config and every stage key. So changing one stage's config recomputes
that stage and what is downstream only, and two runs with the same config share every
artifact. :func:`plan_run` collects the chain (pure, cheap).

**Evaluations.** One model on one benchmark is an artifact too (``eval_items``), keyed by
``keys.eval_key``: the evaluation and grading settings, the model spec, its weights and the
questions themselves. A resumed run therefore does not evaluate again what it finished before
a kill, and a second run with the same base model does not evaluate that base again.

**Shards.** :meth:`RunOutputs.stage_shard` claims a shard (an inter-process lock), reuses it
when a verified copy exists, else reads its inputs, calls the stage and writes the tree first
and the routing last (routing present = shard done). Concurrent runs therefore never compute a
shard twice, and a damaged shard (checksum mismatch) is moved aside by the store and recomputed.

**Run view.** ``run_view.py`` publishes and reads back the manifest of a run's artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_core.config import SphereConfig
from sphere_core.schemas import (
    REJECT_COLUMNS,
    ROUTING_COLUMNS,
    SCHEMA_VERSION,
    TREE_COLUMNS,
)
from sphere_core.storage.artifacts import ArtifactStore
from sphere_core.storage.keys import EVAL_ITEMS, stage_keys

QUESTIONS, REJECTS = "questions", "rejects"
PAIRS = {"train": "pairs_train", "eval": "pairs_eval"}


def tree_output(stage: str) -> str:
    return f"{stage}_tree"


def routing_output(stage: str) -> str:
    return f"{stage}_routing"


def empty_frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_frame(columns)


@dataclass(frozen=True)
class RunPlan:
    """Which artifacts one round of a generate run reads and writes."""

    questions_key: str
    n_shards: int
    stages: dict[str, str]  # stage name -> artifact key, in run order
    pairs_key: str
    round: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        return cls(**data)


def plan_run(cfg: SphereConfig, questions_key: str, n_shards: int, round_no: int = 1) -> RunPlan:
    """The artifact keys of the selected stages and of the pairs (pure)."""
    keys, pairs_key = stage_keys(cfg, questions_key)
    return RunPlan(questions_key, n_shards, keys, pairs_key, round_no)


def shard_count(n_rows: int, shard_size: int) -> int:
    return max(1, -(-n_rows // shard_size))


@dataclass
class ShardInfo:
    """What one stage shard task did."""

    stage: str
    shard: int
    cached: bool
    questions: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # decision -> questions
    elapsed_s: float = 0.0
    search: dict[str, float] = field(default_factory=dict)  # SearchStats of a computed shard
    retried: int = 0  # questions searched again (errored before, or newly routed upstream)


class RunOutputs:
    """Reads and writes a generate run's artifacts (all paths derived from keys)."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.store = ArtifactStore(self.home)

    # -- ingest ---------------------------------------------------------------------------
    def ingest(
        self, key: str, shard_size: int, compute: Callable[[], Any]
    ) -> tuple[int, int, int, bool]:
        """Questions sharded under ``key`` (computed once): (n_shards, questions, rejected,
        cached)."""
        with self.store.claim_artifact(QUESTIONS, key):
            if not (
                self.store.is_complete(QUESTIONS, key, verify=True)
                and self.store.is_complete(REJECTS, key, verify=True)
            ):
                result = compute()
                questions = result.questions.reset_index(drop=True)
                rejects = result.rejects if len(result.rejects) else empty_frame(REJECT_COLUMNS)
                self.store.write_shard(REJECTS, key, 0, rejects)
                self.store.write_manifest(
                    REJECTS, key, {"schema_version": SCHEMA_VERSION}, expected_shards=1
                )
                n = shard_count(len(questions), shard_size)
                for shard in range(n):
                    part = questions.iloc[shard * shard_size : (shard + 1) * shard_size]
                    self.store.write_shard(QUESTIONS, key, shard, part)
                self.store.write_manifest(
                    QUESTIONS, key, {"stats": result.stats}, expected_shards=n
                )
                return n, len(questions), len(rejects), False
        manifest = self.store.read_manifest(QUESTIONS, key) or {}
        rejected = (self.store.read_manifest(REJECTS, key) or {}).get("total_rows", 0)
        return (
            int(manifest.get("shards", 0)),
            int(manifest.get("total_rows", 0)),
            int(rejected),
            True,
        )

    # -- stage shards -----------------------------------------------------------------------
    def shard_done(self, stage: str, key: str, shard: int) -> bool:
        """Both frames of the shard exist and verify (a damaged one is moved aside: not done)."""
        return self.store.has_shard(tree_output(stage), key, shard) and self.store.has_shard(
            routing_output(stage), key, shard
        )

    def stage_shard(
        self,
        plan: RunPlan,
        stage: str,
        shard: int,
        compute: Callable[[pd.DataFrame, pd.DataFrame | None], Any],
    ) -> ShardInfo:
        """Compute one stage on one shard unless a verified result exists.

        ``compute(questions, upstream_routing)`` returns an object with ``tree``/``routing``
        frames (``StageResult``). A stage that takes routed questions and got none for this
        shard writes empty frames without calling ``compute`` (no model is loaded).
        """
        from sphere_core.stages import get_stage
        from sphere_core.stages.runner import has_work

        key, started = plan.stages[stage], time.perf_counter()
        with self.store.claim(routing_output(stage), key, shard):
            questions = self.store.read_shard(QUESTIONS, plan.questions_key, shard)
            upstream = None
            consumes = get_stage(stage).consumes
            if consumes is not None:
                upstream = self.store.read_shard(
                    routing_output(consumes.stage), plan.stages[consumes.stage], shard
                )
            if self.shard_done(stage, key, shard):
                routing = self.store.read_shard(routing_output(stage), key, shard)
                redo = _redo(stage, routing, upstream)
                if not redo:
                    return ShardInfo(stage, shard, True, len(routing), _counts(routing))
                routing = self._retry(
                    plan, stage, shard, routing, redo, questions, upstream, compute
                )
                return ShardInfo(
                    stage,
                    shard,
                    False,
                    len(routing),
                    _counts(routing),
                    round(time.perf_counter() - started, 3),
                    retried=len(redo),
                )
            if has_work(stage, upstream):
                result = compute(questions, upstream)
                tree, routing = result.tree, result.routing
            else:
                tree, routing = empty_frame(TREE_COLUMNS), empty_frame(ROUTING_COLUMNS)
            self.store.write_shard(tree_output(stage), key, shard, tree)
            self.store.write_shard(routing_output(stage), key, shard, routing)  # last: marks done
        return ShardInfo(
            stage,
            shard,
            False,
            len(routing),
            _counts(routing),
            round(time.perf_counter() - started, 3),
        )

    def _retry(
        self,
        plan: RunPlan,
        stage: str,
        shard: int,
        routing: pd.DataFrame,
        redo: set[str],
        questions: pd.DataFrame,
        upstream: pd.DataFrame | None,
        compute,
    ) -> pd.DataFrame:
        """Search the ``redo`` questions of a finished shard again; keep its other rows."""
        key = plan.stages[stage]
        pick = questions["question_id"].astype(str).isin(redo)
        up = None if upstream is None else upstream[upstream["question_id"].astype(str).isin(redo)]
        result = compute(questions[pick], up)
        tree = self.store.read_shard(tree_output(stage), key, shard)
        keep_tree = tree[~tree["question_id"].astype(str).isin(redo)]
        keep = routing[~routing["question_id"].astype(str).isin(redo)]
        why = f"held {len(redo)} question(s) searched again (errored or newly routed)"
        self.store.replace_shard(
            tree_output(stage), key, shard, concat([keep_tree, result.tree], TREE_COLUMNS), why
        )
        routing = concat([keep, result.routing], ROUTING_COLUMNS)
        self.store.replace_shard(routing_output(stage), key, shard, routing, why)  # last
        return routing

    def seal(self, plan: RunPlan) -> None:
        """Write the manifests of every stage artifact (all shards present)."""
        for stage, key in plan.stages.items():
            for name in (tree_output(stage), routing_output(stage)):
                if not self.store.is_complete(name, key, verify=True):
                    self.store.write_manifest(
                        name, key, {"schema_version": SCHEMA_VERSION}, expected_shards=plan.n_shards
                    )

    def stage_frames(self, plan: RunPlan, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(routing, tree) of every stage of the plan, stamped with ``run_id``."""
        routing = [self.store.read_stage(routing_output(s), k) for s, k in plan.stages.items()]
        trees = [self.store.read_stage(tree_output(s), k) for s, k in plan.stages.items()]
        return (
            concat(routing, ROUTING_COLUMNS).assign(run_id=run_id),
            concat(trees, TREE_COLUMNS).assign(run_id=run_id),
        )

    # -- pairs --------------------------------------------------------------------------------
    def pairs(
        self,
        plan: RunPlan,
        compute: Callable[[], tuple[pd.DataFrame, pd.DataFrame, list]],
        refresh: bool = False,
    ) -> dict:
        """Train/eval pairs under ``plan.pairs_key`` (computed once): counts and dropped.
        ``refresh``: a stage shard was searched again, so pairs built before are moved aside."""
        with self.store.claim_artifact(PAIRS["eval"], plan.pairs_key):
            if refresh:
                for name in PAIRS.values():
                    self.store.discard(name, plan.pairs_key, "predates questions searched again")
            if not all(
                self.store.is_complete(name, plan.pairs_key, verify=True) for name in PAIRS.values()
            ):
                train, evaluation, dropped = compute()
                for split, frame in (
                    ("train", train),
                    ("eval", evaluation),
                ):  # eval last: marks done
                    name = PAIRS[split]
                    if not self.store.is_complete(name, plan.pairs_key, verify=True):
                        self.store.write_shard(name, plan.pairs_key, 0, frame)
                        self.store.write_manifest(
                            name,
                            plan.pairs_key,
                            {"schema_version": SCHEMA_VERSION, "dropped": dropped},
                            expected_shards=1,
                        )
        counts = {
            split: int((self.store.read_manifest(name, plan.pairs_key) or {}).get("total_rows", 0))
            for split, name in PAIRS.items()
        }
        dropped = (self.store.read_manifest(PAIRS["eval"], plan.pairs_key) or {}).get("dropped", [])
        return {"train": counts["train"], "eval": counts["eval"], "dropped": dropped}

    def read_pairs(self, plan: RunPlan, split: str, run_id: str) -> pd.DataFrame:
        return self.store.read_stage(PAIRS[split], plan.pairs_key).assign(run_id=run_id)

    # -- evaluations ------------------------------------------------------------------------------
    def evaluation(
        self, key: str, compute: Callable[[], pd.DataFrame]
    ) -> tuple[pd.DataFrame, bool]:
        """Per-item evaluation records under ``key`` (computed once): (items, reused)."""
        with self.store.claim_artifact(EVAL_ITEMS, key):
            if self.store.is_complete(EVAL_ITEMS, key, verify=True):
                return self.store.read_stage(EVAL_ITEMS, key), True
            items = compute()
            self.store.write_shard(EVAL_ITEMS, key, 0, items)
            self.store.write_manifest(
                EVAL_ITEMS, key, {"schema_version": SCHEMA_VERSION}, expected_shards=1
            )
            return items, False


def _redo(stage: str, routing: pd.DataFrame, upstream: pd.DataFrame | None) -> set[str]:
    """Questions of a finished shard to search again: its ``error`` rows, and questions the
    upstream stage routes here that it has no row for (the upstream retried them)."""
    from sphere_core.stages import get_stage
    from sphere_core.stages.runner import select_rows

    ids = routing["question_id"].astype(str)
    redo = set(ids[routing["decision"] == "error"])
    wanted = select_rows(get_stage(stage), upstream)
    if wanted is not None:
        redo |= set(wanted["question_id"].astype(str)) - set(ids)
    return redo


def _counts(routing: pd.DataFrame) -> dict[str, int]:
    return (
        {str(k): int(v) for k, v in routing["decision"].value_counts().items()}
        if len(routing)
        else {}
    )
