"""Grade a JSONL file of predictions (``sphere grade``).

Owns the file workflow: read rows with ``prediction`` and ``answer`` (optional ``id``), grade
them through a ``Grader`` (extraction and verification of each row run in a worker under the
per-item timeout, so a file of n rows takes at most about ``n / workers * timeout_s``), write
``<name>.graded.jsonl`` (every input row, plus ``row``, ``extracted``, ``correct``, ``status``
and ``error``). A malformed line or a row missing a field is reported with its row number and
counted in ``errors``; it never stops the file. The result reports the elapsed time and the
number of timed-out rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sphere_core.errors import InputDataError
from sphere_core.grading.grader import Grader


@dataclass
class GradeFileResult:
    graded_file: Path
    total_rows: int
    graded: int
    correct: int
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"row", "reason"}
    timeouts: int = 0
    elapsed_s: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    def summary(self) -> dict[str, Any]:
        return {
            "total_rows": self.total_rows,
            "graded": self.graded,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "errors": len(self.errors),
            "timeouts": self.timeouts,
            "elapsed_s": round(self.elapsed_s, 3),
            "graded_file": str(self.graded_file),
        }


def graded_path(path: Path) -> Path:
    name = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    return path.with_name(f"{name}.graded.jsonl")


def _field_text(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    return str(value)


def _row_problem(prediction: str | None, answer: str | None) -> str | None:
    """Why a parsed row cannot be graded (None: it can)."""
    missing = [n for n, v in (("prediction", prediction), ("answer", answer)) if v is None]
    if missing:
        return "missing or non-text field " + ", ".join(repr(m) for m in missing)
    if not answer.strip():
        return "empty 'answer'"
    return None


def _write_rows(out: Path, rows: dict[int, dict[str, Any]]) -> None:
    """The graded rows in row order as JSONL, written under a temporary name, then renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row_no in sorted(rows):
            handle.write(json.dumps(rows[row_no], ensure_ascii=False, default=str) + "\n")
    tmp.replace(out)


def grade_file(
    path: str | Path,
    grader: Grader,
    out_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> GradeFileResult:
    from sphere_core.data.readers import plain, read_rows  # lazy: sphere_core.data imports grading

    started = time.monotonic()
    path = Path(path)
    if path.is_dir():
        raise InputDataError(f"{path} is a directory; sphere grade expects a JSONL file")
    rows = read_rows(path, "jsonl")
    out = Path(out_path) if out_path else graded_path(path)
    errors: list[dict[str, Any]] = []
    error_records: dict[int, dict[str, Any]] = {}
    good: list[tuple[int, dict[str, Any], str, str]] = []
    for row_no, record, error, _raw in rows:
        if error is None and record is not None:
            prediction, answer = _field_text(record, "prediction"), _field_text(record, "answer")
            error = _row_problem(prediction, answer)
            if error is None:
                good.append((row_no, record, prediction, answer))
                continue
        errors.append({"row": row_no, "reason": error})
        error_records[row_no] = record or {}
    verdicts = grader.grade_texts_detailed(
        [p for _, _, p, _ in good], [a for *_, a in good], progress=progress
    )
    graded_rows = {
        row_no: {
            **plain(record),
            "row": row_no,
            "extracted": v.extracted,
            "correct": v.correct,
            "status": v.status,
            "error": v.detail or None,
        }
        for (row_no, record, _, _), v in zip(good, verdicts)
    }
    for err in errors:
        graded_rows[err["row"]] = {
            **plain(error_records[err["row"]]),
            "row": err["row"],
            "extracted": None,
            "correct": False,
            "status": "error",
            "error": err["reason"],
        }
    _write_rows(out, graded_rows)
    return GradeFileResult(
        graded_file=out,
        total_rows=len(rows),
        graded=len(good),
        correct=sum(v.correct for v in verdicts),
        errors=errors,
        timeouts=sum(v.status == "timeout" for v in verdicts),
        elapsed_s=time.monotonic() - started,
    )
