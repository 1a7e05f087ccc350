"""The whole grading of one item, as a grading worker runs it under the per-item deadline.

Owns the order of the checks: extract the final answer from a model text (when given one),
then the exact-match fast path after normalisation, then the equivalence function. It does
not own the deadline (``pool``) or the policy of which fallback to use (``grader``).
"""

from __future__ import annotations

from collections.abc import Callable

from sphere_core.grading.extract import extract_answer, normalize_answer

CORRECT = ("exact", "verified")


def grade_item(
    verify_fn: Callable[[str, str], bool],
    gold: str,
    text: str | None = None,
    prediction: str | None = None,
    fallback: str = "none",
) -> tuple[str | None, str, str]:
    """``(extracted, status, detail)`` for one item.

    Give ``text`` (a model solution: its answer is extracted with ``fallback``) or
    ``prediction`` (an answer already extracted). ``status`` is exact | verified | mismatch |
    no_answer | error; an exception from ``verify_fn`` is an ``error`` with its message.
    """
    if text is not None:
        prediction = extract_answer(text, fallback=fallback)
    if prediction is None or not prediction.strip():
        return prediction, "no_answer", ""
    if normalize_answer(prediction) == normalize_answer(gold):
        return prediction, "exact", ""
    try:
        same = bool(verify_fn(prediction, gold))
    except Exception as err:  # noqa: BLE001 - reported as this item's error
        return prediction, "error", f"{type(err).__name__}: {err}"[:500]
    return prediction, "verified" if same else "mismatch", ""
