"""Question data: ingest + validation of question files (``ingest``, ``readers``), the packaged
builtin training sets (``builtin/``) and evaluation benchmarks (``benchmarks``, ``benchmarks/``)."""

from sphere_core.data.benchmarks import BENCHMARKS, load_benchmark, load_question_file
from sphere_core.data.ingest import (
    IngestResult,
    ingest_file,
    question_id,
    resolve_data_path,
    write_ingest,
)

__all__ = [
    "BENCHMARKS",
    "IngestResult",
    "ingest_file",
    "load_benchmark",
    "load_question_file",
    "question_id",
    "resolve_data_path",
    "write_ingest",
]
