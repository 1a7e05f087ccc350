"""Evaluation benchmarks packaged with SPHERE, and loading of a user's benchmark file.

The name -> packaged file map is ``benchmark_files.BENCHMARKS`` (a leaf module the config
checks names against); this module returns questions in ``QUESTION_COLUMNS``, in file order.
Scoring is elsewhere (``sphere_core.evaluation``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from sphere_core.config import DataConfig
from sphere_core.data.benchmark_files import BENCHMARKS, benchmark_path
from sphere_core.data.ingest import ingest_file
from sphere_core.errors import InputDataError

log = logging.getLogger(__name__)

__all__ = ["BENCHMARKS", "benchmark_path", "load_benchmark", "load_question_file"]


def load_question_file(path: str | Path, limit: int | None = None) -> pd.DataFrame:
    """Questions (``problem``/``question`` + ``answer`` or a ####/\\boxed{} solution) from a file.

    Bad rows are skipped with a warning; a file with no usable row raises ``InputDataError``.
    """
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
