"""The evaluation benchmarks packaged with SPHERE: name -> file (a leaf module).

The files live in ``benchmarks/*.jsonl`` (provenance and licences in ``benchmarks/SOURCES.md``).
The config checks ``evaluation.benchmarks`` against these names; loading them is in
``sphere_core.data.benchmark_sets``.
"""

from __future__ import annotations

from pathlib import Path

from sphere_core.errors import EvaluationError

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
