"""Evaluation benchmarks packaged with SPHERE, and loading of a user's benchmark file.

Owns the name -> packaged file map (``benchmarks/*.jsonl``; provenance and licences in
``benchmarks/SOURCES.md``) and returns questions in ``QUESTION_COLUMNS``, in file order.
Scoring is elsewhere (``sphere_core.evaluation``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from sphere_core.config import DataConfig
from sphere_core.errors import EvaluationError, InputDataError

log = logging.getLogger(__name__)

BENCHMARK_DIR = Path(__file__).resolve().parent / "benchmarks"
BENCHMARKS: dict[str, str] = {
    "gsm8k": "gsm8k_test.jsonl",
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "aime22_24": "aime22_24.jsonl",
    "amc23": "amc23.jsonl",
    "olympiadbench": "olympiadbench.jsonl",
}


def benchmark_path(name: str) -> Path:
    if name not in BENCHMARKS:
        raise EvaluationError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    path = BENCHMARK_DIR / BENCHMARKS[name]
    if not path.is_file():
        raise EvaluationError(f"benchmark file for {name!r} is missing from the install: {path}")
    return path


def load_question_file(path: str | Path, limit: int | None = None) -> pd.DataFrame:
    """Questions (``problem``/``question`` + ``answer`` or a ####/\\boxed{} solution) from a file.

    Bad rows are skipped with a warning; a file with no usable row raises ``InputDataError``.
    """
    from sphere_core.data.ingest import ingest_file

    result = ingest_file(path, DataConfig(path=str(path), limit=limit))
    if result.stats["rejected"]:
        first = result.rejects.iloc[0]
        log.warning(
            "%s: skipped %d bad rows (first: row %d, %s)",
            path,
            result.stats["rejected"],
            first["row"],
            first["reason"],
        )
    if result.questions.empty:
        raise InputDataError(f"{path}: no usable question rows")
    return result.questions


def load_benchmark(name: str, limit: int | None = None) -> pd.DataFrame:
    """The packaged benchmark ``name`` (first ``limit`` questions), in ``QUESTION_COLUMNS``."""
    questions = load_question_file(benchmark_path(name), limit=limit)
    questions["source"] = f"benchmark:{name}"
    return questions
