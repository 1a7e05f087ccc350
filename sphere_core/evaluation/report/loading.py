"""Reading one run's parts for the report: the store rows and, per round, the run view, the
pairs on disk and the DPO training log (:class:`RoundData`).

A part that cannot be read because of I/O or a damaged or missing artifact (``SphereError``,
``OSError``, ``ValueError``, which covers Parquet and JSON parse errors) becomes one sentence
in ``RoundData.problems`` / the run's problems and the report is still written. Anything else
(``KeyError``, ``TypeError``, ...) is a bug and propagates.

To give a new section more data: add a field to :class:`RoundData` and read it in
:func:`load_round` through :func:`attempt`, or read it in the section from ``data.view``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from sphere_core.errors import SphereError
from sphere_core.paths import run_dir
from sphere_core.schemas import PAIR_COLUMNS, ROUTING_COLUMNS
from sphere_core.storage.run_view import VIEW_FILE, RunView

log = logging.getLogger(__name__)

READ_ERRORS = (SphereError, OSError, ValueError)
"""What makes a part "unreadable" (missing, I/O, damaged); other exceptions are bugs."""
_ROUND_DIR = re.compile(r"^round-(\d+)$")


class RunStore(Protocol):
    """The store queries the report reads (``sphere_core.storage.repo.Repository`` has them)."""

    def get_run(self, run_id: str) -> dict | None: ...
    def routes_for_run(self, run_id: str, round: int | None = None) -> list[dict]: ...
    def pairs_for_run(self, run_id: str, round: int | None = None) -> list[dict]: ...
    def evaluations_for_run(self, run_id: str, round: int | None = None) -> list[dict]: ...


@dataclass
class RoundData:
    """What one round of a run left behind (empty frames for parts that do not exist)."""

    round: int
    dir: Path
    has_view: bool = False
    routing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ROUTING_COLUMNS))
    routing_source: str = ""
    pairs: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=[*PAIR_COLUMNS, "split"])
    )
    pairs_have_text: bool = True
    completions: pd.DataFrame | None = None  # tree rows with completion=True; None: not recorded
    tokens: dict[str, dict] | None = None  # summary.token_usage of the trees; None: not recorded
    summary: dict[str, Any] = field(default_factory=dict)
    train_log: dict[str, Any] | None = None
    evaluations: pd.DataFrame = field(default_factory=pd.DataFrame)
    problems: list[str] = field(default_factory=list)
    view: RunView | None = field(default=None, repr=False)  # None when the run view is unreadable

    @property
    def has_data(self) -> bool:
        return bool(
            self.has_view
            or len(self.routing)
            or len(self.pairs)
            or self.train_log
            or len(self.evaluations)
            or self.problems
        )


def attempt(problems: list[str], what: str, fn: Callable[[], Any], default: Any) -> Any:
    """``fn()``, or ``default`` with a sentence in ``problems`` when it cannot be read."""
    try:
        return fn()
    except READ_ERRORS as err:
        log.warning("report: cannot read %s: %s", what, err)
        problems.append(f"cannot read {what}: {err}")
        return default


@dataclass
class StoreRows:
    """The store's rows of one run, every round (each frame with a ``round`` column)."""

    routes: pd.DataFrame = field(default_factory=pd.DataFrame)
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)
    evaluations: pd.DataFrame = field(default_factory=pd.DataFrame)

    def frames(self) -> tuple[pd.DataFrame, ...]:
        return self.routes, self.pairs, self.evaluations


def store_rows(repo: RunStore | None, run_id: str, problems: list[str]) -> StoreRows:
    """Routing events, pairs and evaluations of every round (empty without a store)."""
    if repo is None:
        return StoreRows()

    def read(name: str, query: Callable[[str], list[dict]]) -> pd.DataFrame:
        frame = pd.DataFrame(
            attempt(problems, f"the store's {name} of run {run_id}", lambda: query(run_id), [])
        )
        if len(frame) and "round" not in frame.columns:
            frame["round"] = 1
        return frame

    return StoreRows(
        routes=read("routes", repo.routes_for_run),
        pairs=read("pairs", repo.pairs_for_run),
        evaluations=read("evaluations", repo.evaluations_for_run),
    )


def of_round(frame: pd.DataFrame, r: int) -> pd.DataFrame:
    """The rows of round ``r`` (a frame without a ``round`` column has none)."""
    if frame.empty or "round" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["round"].fillna(1).astype(int) == r].reset_index(drop=True)


def _completions(view: RunView) -> pd.DataFrame | None:
    """Completion-rollout steps of every stage (one stage's tree in memory at a time)."""
    frames = []
    for stage in view.stages():
        tree = view.tree(stage)
        if len(tree) and "completion" not in tree.columns:
            return None  # written before the completion column existed
        if len(tree):
            hit = tree["completion"].fillna(False).astype(bool)
            frames.append(tree.loc[hit, ["question_id", "stage", "path", "text"]])
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["question_id", "stage", "path", "text"])
    )


def _tokens(view: RunView, pairs: pd.DataFrame) -> dict[str, dict] | None:
    """Generated tokens per stage and for the round (``summary.token_usage``); None when the
    trees predate the ``num_tokens`` column."""
    from sphere_core.summary import token_usage

    frames = []
    for stage in view.stages():
        tree = view.tree(stage)
        if len(tree):
            frames.append(tree.reindex(columns=["stage", "question_id", "num_tokens"]))
    trees = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["stage", "question_id", "num_tokens"])
    )
    usage = token_usage(trees, pairs)
    return usage if usage["all"]["total"] is not None else None


def _read_pairs(data: RoundData, view: RunView) -> pd.DataFrame:
    parts = []
    for split in ("train", "eval"):
        path = view.pairs_path(split)
        if path.is_file():
            frame = attempt(
                data.problems, str(path), lambda p=path: pd.read_parquet(p), pd.DataFrame()
            )
            if len(frame):
                parts.append(frame.assign(split=split))
    return pd.concat(parts, ignore_index=True) if parts else data.pairs


def _read_view(data: RoundData, view: RunView) -> None:
    """The run view's summary, routing and completion rollouts (when it is readable)."""
    r = data.round
    if attempt(data.problems, f"the run view of round {r}", lambda: view.record, None) is None:
        data.has_view = False  # unreadable: said once; the store's rows stand in
        return
    data.view = view
    data.summary = view.summary()
    data.routing = attempt(data.problems, f"the routing of round {r}", view.routing, data.routing)
    data.routing_source = "run view"
    data.completions = attempt(
        data.problems, f"the search trees of round {r}", lambda: _completions(view), None
    )


def load_round(home: Path, run_id: str, r: int, store: StoreRows) -> RoundData:
    """Round ``r``'s outputs from its run view, its model dir and the store rows of round ``r``."""
    view = RunView(home, run_id, r)
    data = RoundData(r, view.dir, has_view=view.exists)
    if data.has_view:
        _read_view(data, view)
    data.pairs = _read_pairs(data, view)
    routes, pairs = of_round(store.routes, r), of_round(store.pairs, r)
    if data.routing.empty and len(routes):
        data.routing, data.routing_source = routes, "store"
    if data.pairs.empty and len(pairs):
        data.pairs, data.pairs_have_text = pairs, False
    if data.view is not None:
        data.tokens = attempt(
            data.problems, f"the search trees of round {r}", lambda: _tokens(view, data.pairs), None
        )
    train_log = view.model_dir() / "train_log.json"
    if train_log.is_file():
        data.train_log = attempt(
            data.problems, str(train_log), lambda: json.loads(train_log.read_text()), None
        )
    data.evaluations = of_round(store.evaluations, r)
    return data


def rounds_on_disk(home: Path, run_id: str) -> set[int]:
    """Rounds with a directory (``round-<r>``) or, for round 1, a run view or a training log."""
    base = run_dir(home, run_id)
    found = (
        {1}
        if (base / VIEW_FILE).is_file() or (base / "model" / "train_log.json").is_file()
        else set()
    )
    if base.is_dir():
        for child in base.iterdir():
            match = _ROUND_DIR.match(child.name)
            if match and child.is_dir():
                found.add(int(match.group(1)))
    return found


@dataclass
class RunParts:
    """Everything the report shows: the store record, the rounds and the run-level problems."""

    run_id: str
    home: Path
    record: dict | None
    planned: int  # rounds the run was configured for
    last: int  # the highest round with anything (store record, disk or store rows)
    reached: int  # the highest round with outputs (or the store record's round)
    rounds: list[RoundData]
    problems: list[str]

    @property
    def config(self) -> dict | None:
        return (self.record or {}).get("config") or None

    @property
    def multi(self) -> bool:
        return self.planned > 1 or self.last > 1


def load_run(home: Path, run_id: str, repo: RunStore | None) -> RunParts:
    """Every round's parts, from disk and the store (``repo=None``: disk only)."""
    problems: list[str] = []
    record = (
        attempt(problems, f"the store record of run {run_id}", lambda: repo.get_run(run_id), None)
        if repo is not None
        else None
    )
    config = (record or {}).get("config") or {}
    store = store_rows(repo if record else None, run_id, problems)
    found = rounds_on_disk(home, run_id)
    for frame in store.frames():
        if len(frame):
            found |= {int(r) for r in frame["round"].fillna(1)}
    planned = int(
        (record or {}).get("rounds") or (config.get("evolution") or {}).get("rounds") or 1
    )
    last = max([int((record or {}).get("round") or 1), *found, 1])
    rounds = [load_round(home, run_id, r, store) for r in range(1, last + 1)]
    reached = max([d.round for d in rounds if d.has_data], default=0)
    if record is not None and record.get("round"):
        reached = max(reached, int(record["round"]))
    return RunParts(run_id, home, record, planned, last, reached, rounds, problems)
