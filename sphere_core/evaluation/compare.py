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
from sphere_core.storage.run_view import round_dir

BASE, TRAINED = "base", "trained"


def load_items(
    eval_dir: Path, label: str, benchmarks: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """The per-item records of model ``label`` under ``eval_dir`` by benchmark, each with a
    ``benchmark`` column (every benchmark found, or only ``benchmarks``); empty when none.

    Benchmarks stay separate frames: a file written before a column existed keeps lacking it
    (its format failures are then "n/a", not counted)."""
    folder = Path(eval_dir) / label
    paths = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if benchmarks is not None:
        wanted = list(dict.fromkeys(benchmarks))
        paths = [folder / f"{b}.parquet" for b in wanted if (folder / f"{b}.parquet").is_file()]
    out: dict[str, pd.DataFrame] = {}
    for path in paths:
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as err:  # pyarrow's errors for a damaged file are these
            raise ArtifactError(f"cannot read evaluation items {path}: {err}") from err
        out[path.stem] = frame.assign(benchmark=path.stem)
    return out


def compare_loaded(
    a: dict[str, pd.DataFrame],
    b: dict[str, pd.DataFrame],
    *,
    label_a: str,
    label_b: str,
    n_boot: int,
    seed: int,
) -> list[PairedComparison]:
    """:func:`compare_items` per benchmark both evaluated (in ``a``'s order)."""
    out: list[PairedComparison] = []
    for bench, items in a.items():
        if bench in b:
            out += compare_items(
                items, b[bench], label_a=label_a, label_b=label_b, n_boot=n_boot, seed=seed
            )
    return out


def base_vs_trained(
    eval_dir: Path, benchmarks: Sequence[str] | None = None, *, n_boot: int = 10000, seed: int = 0
) -> list[PairedComparison]:
    """Base vs trained on each benchmark both answered; empty without both evaluations."""
    base, trained = (
        load_items(eval_dir, BASE, benchmarks),
        load_items(eval_dir, TRAINED, benchmarks),
    )
    return compare_loaded(base, trained, label_a=BASE, label_b=TRAINED, n_boot=n_boot, seed=seed)


def run_eval_dir(home: Path, run_id: str, round: int = 1) -> Path:
    """``<round dir>/eval`` of an existing run (RunNotFoundError for an unknown run)."""
    base = run_dir(Path(home), run_id)
    if not base.is_dir():
        raise RunNotFoundError(f"unknown run {run_id!r}: {base} does not exist")
    folder = round_dir(Path(home), run_id, round)
    if not folder.is_dir():
        raise EvaluationError(f"run {run_id!r} has no round {round} ({folder} does not exist)")
    return folder / "eval"


def compare_runs(
    home: Path, run_a: str, run_b: str, round: int = 1, *, n_boot: int = 10000, seed: int = 0
) -> list[PairedComparison]:
    """Trained model of ``run_a`` vs that of ``run_b``, and each run's base vs its trained model.

    Order: ``A/base`` vs ``A/trained``, ``B/base`` vs ``B/trained`` (when the run evaluated its
    base), then ``A/trained`` vs ``B/trained``. Raises EvaluationError when a run has no
    evaluation of its trained model or the two trained models share no question.
    """
    loaded = {}
    for run in dict.fromkeys((run_a, run_b)):
        folder = run_eval_dir(home, run, round)
        trained = load_items(folder, TRAINED)
        if not trained:
            raise EvaluationError(
                f"run {run!r} (round {round}) has no evaluation of its trained model in "
                f"{folder / TRAINED}; run `sphere evaluate --run {run}` first"
            )
        loaded[run] = (load_items(folder, BASE), trained)
    out: list[PairedComparison] = []
    for run, (base, trained) in loaded.items():
        out += compare_loaded(
            base,
            trained,
            label_a=f"{run}/{BASE}",
            label_b=f"{run}/{TRAINED}",
            n_boot=n_boot,
            seed=seed,
        )
    (_, a), (_, b) = loaded[run_a], loaded[run_b]
    across = compare_loaded(
        a, b, label_a=f"{run_a}/{TRAINED}", label_b=f"{run_b}/{TRAINED}", n_boot=n_boot, seed=seed
    )
    if not across:
        raise EvaluationError(
            f"runs {run_a!r} and {run_b!r} (round {round}) have no evaluated question in common "
            f"(benchmarks {', '.join(a)} vs {', '.join(b)})"
        )
    return out + across
