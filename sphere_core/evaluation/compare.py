"""Paired comparisons read from evaluation outputs on disk: base vs trained within a run, and
the trained models of two runs (``sphere compare``).

An evaluation writes one Parquet file of per-item records per model and benchmark,
``<round dir>/eval/<label>/<benchmark>.parquet`` (``label``: ``base`` or ``trained``); the
statistics are :mod:`sphere_core.evaluation.paired_stats` over the questions both models
answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sphere_core.errors import ArtifactError, EvaluationError, RunNotFoundError
from sphere_core.evaluation.paired_stats import PairedComparison, compare_items
from sphere_core.paths import run_dir
from sphere_core.storage.run_outputs import round_dir

BASE, TRAINED = "base", "trained"


def load_items(eval_dir: Path, label: str, benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """The per-item records of model ``label`` under ``eval_dir``, with a ``benchmark`` column
    (every benchmark found, or only ``benchmarks``); empty when there are none."""
    folder = Path(eval_dir) / label
    paths = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if benchmarks is not None:
        wanted = list(dict.fromkeys(benchmarks))
        paths = [folder / f"{b}.parquet" for b in wanted if (folder / f"{b}.parquet").is_file()]
    frames = []
    for path in paths:
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise ArtifactError(f"cannot read evaluation items {path}: {err}") from err
        frames.append(frame.assign(benchmark=path.stem))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def base_vs_trained(eval_dir: Path, benchmarks: Sequence[str] | None = None, *, n_boot: int = 10000,
                    seed: int = 0) -> list[PairedComparison]:
    """Base vs trained on each benchmark both answered; empty without both evaluations."""
    base, trained = load_items(eval_dir, BASE, benchmarks), load_items(eval_dir, TRAINED, benchmarks)
    if base.empty or trained.empty:
        return []
    return compare_items(base, trained, label_a=BASE, label_b=TRAINED, n_boot=n_boot, seed=seed)


def run_eval_dir(home: Path, run_id: str, round: int = 1) -> Path:
    """``<round dir>/eval`` of an existing run (RunNotFoundError for an unknown run)."""
    base = run_dir(Path(home), run_id)
    if not base.is_dir():
        raise RunNotFoundError(f"unknown run {run_id!r}: {base} does not exist")
    folder = round_dir(Path(home), run_id, round)
    if not folder.is_dir():
        raise EvaluationError(f"run {run_id!r} has no round {round} ({folder} does not exist)")
    return folder / "eval"


def compare_runs(home: Path, run_a: str, run_b: str, round: int = 1, *, n_boot: int = 10000,
                 seed: int = 0) -> list[PairedComparison]:
    """Trained model of ``run_a`` vs that of ``run_b``, and each run's base vs its trained model.

    Order: ``A/base`` vs ``A/trained``, ``B/base`` vs ``B/trained`` (when the run evaluated its
    base), then ``A/trained`` vs ``B/trained``. Raises EvaluationError when a run has no
    evaluation of its trained model or the two trained models share no question.
    """
    loaded = {}
    for run in dict.fromkeys((run_a, run_b)):
        folder = run_eval_dir(home, run, round)
        trained = load_items(folder, TRAINED)
        if trained.empty:
            raise EvaluationError(
                f"run {run!r} (round {round}) has no evaluation of its trained model in "
                f"{folder / TRAINED}; run `sphere evaluate --run {run}` first")
        loaded[run] = (load_items(folder, BASE), trained)
    out: list[PairedComparison] = []
    for run, (base, trained) in loaded.items():
        if not base.empty:
            out += compare_items(base, trained, label_a=f"{run}/{BASE}", label_b=f"{run}/{TRAINED}",
                                 n_boot=n_boot, seed=seed)
    (_, a), (_, b) = loaded[run_a], loaded[run_b]
    across = compare_items(a, b, label_a=f"{run_a}/{TRAINED}", label_b=f"{run_b}/{TRAINED}",
                           n_boot=n_boot, seed=seed)
    if not across:
        raise EvaluationError(
            f"runs {run_a!r} and {run_b!r} (round {round}) have no evaluated question in common "
            f"(benchmarks {_benchmarks(a)} vs {_benchmarks(b)})")
    return out + across


def _benchmarks(items: pd.DataFrame) -> str:
    return ", ".join(dict.fromkeys(items["benchmark"])) or "none"
