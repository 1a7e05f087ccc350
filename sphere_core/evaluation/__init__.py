"""Evaluation (Pass@1, two-turn self-correction) and the run report with plots.

Heavy libraries (torch, transformers, matplotlib) load inside the functions that need them.
"""

from sphere_core.evaluation.metrics import (
    ITEM_COLUMNS,
    SUMMARY_COLUMNS,
    flips,
    score_items,
    summary_rows,
)
from sphere_core.evaluation.runner import evaluate, evaluate_questions, record_summary

__all__ = [
    "ITEM_COLUMNS",
    "SUMMARY_COLUMNS",
    "evaluate",
    "evaluate_questions",
    "flips",
    "record_summary",
    "score_items",
    "summary_rows",
]
