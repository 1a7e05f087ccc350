"""Evaluation metrics from per-item records (pure functions, no models).

Pass@1 is the share of turn-1 answers that verify. Two-turn self-correction: turn 2 asks
the model to review its own turn-1 answer; ``self_correction_acc`` is the share correct after
turn 2 and the flips count answers that went right->wrong and wrong->right between turns.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

ITEM_COLUMNS = [
    "question_id",
    "problem",
    "gold",
    "response_1",
    "extracted_1",
    "correct_1",
    "response_2",
    "extracted_2",
    "correct_2",
]
SUMMARY_COLUMNS = ["model_label", "benchmark", "metric", "value", "n"]
METRICS = ("pass@1", "self_correction_acc", "flips_r2w", "flips_w2r")


def flips(correct_1: pd.Series, correct_2: pd.Series) -> tuple[int, int]:
    """(right->wrong, wrong->right) counts over items that have both turns."""
    both = correct_1.notna() & correct_2.notna()
    c1 = correct_1[both].astype(bool)
    c2 = correct_2[both].astype(bool)
    return int((c1 & ~c2).sum()), int((~c1 & c2).sum())


def score_items(items: pd.DataFrame) -> dict[str, Any]:
    """Metrics of one model on one benchmark. Turn-2 metrics are None without turn 2."""
    n = len(items)
    if n == 0:
        return {
            "n": 0,
            "pass@1": None,
            "self_correction_acc": None,
            "flips_r2w": None,
            "flips_w2r": None,
        }
    out: dict[str, Any] = {"n": n, "pass@1": float(items["correct_1"].astype(bool).mean())}
    has_turn2 = "correct_2" in items and items["correct_2"].notna().any()
    if has_turn2:
        r2w, w2r = flips(items["correct_1"], items["correct_2"])
        out.update(
            self_correction_acc=float(items["correct_2"].fillna(False).astype(bool).mean()),
            flips_r2w=r2w,
            flips_w2r=w2r,
        )
    else:
        out.update(self_correction_acc=None, flips_r2w=None, flips_w2r=None)
    return out


def summary_rows(model_label: str, benchmark: str, items: pd.DataFrame) -> pd.DataFrame:
    """One row per metric (SUMMARY_COLUMNS); metrics that were not measured are left out."""
    scores = score_items(items)
    rows = [
        {
            "model_label": model_label,
            "benchmark": benchmark,
            "metric": m,
            "value": scores[m],
            "n": scores["n"],
        }
        for m in METRICS
        if scores[m] is not None
    ]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def accuracy_table(evaluations: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Store rows (or a summary frame) -> wide table: benchmark x (model_label, metric)."""
    df = pd.DataFrame(evaluations)
    if df.empty:
        return pd.DataFrame()
    df = df[df["metric"].isin(["pass@1", "self_correction_acc"])]
    return df.pivot_table(
        index="benchmark", columns=["model_label", "metric"], values="value", aggfunc="last"
    )
