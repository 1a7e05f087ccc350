"""Fabricated per-item evaluation records, written where ``sphere evaluate`` writes them:
``runs/<id>[/round-<r>]/eval/<label>/<benchmark>.parquet`` (ITEM_COLUMNS + ``note``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sphere_core.evaluation.metrics import ITEM_COLUMNS


def write_items(
    home: Path,
    run: str,
    label: str,
    bench: str,
    correct: list[bool],
    ids: list[str] | None = None,
    no_answer: tuple[int, ...] = (),
    round: int = 1,
) -> Path:
    """One model's records on one benchmark: question ``ids`` (default q1..qn) answered right
    where ``correct``; the items at positions ``no_answer`` have no extracted final answer."""
    ids = ids or [f"q{i + 1}" for i in range(len(correct))]
    rows = []
    for i, (qid, ok) in enumerate(zip(ids, correct)):
        extracted = None if i in no_answer else ("7" if ok else "8")
        rows.append(
            {
                "question_id": qid,
                "problem": f"p {qid}",
                "gold": "7",
                "response_1": "...",
                "extracted_1": extracted,
                "correct_1": ok,
                "response_2": None,
                "extracted_2": None,
                "correct_2": None,
                "note": "",
            }
        )
    folder = Path(home) / "runs" / run / ("" if round == 1 else f"round-{round}") / "eval" / label
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bench}.parquet"
    pd.DataFrame(rows, columns=[*ITEM_COLUMNS, "note"]).to_parquet(path, index=False)
    return path
