"""Mathematical equivalence of one predicted answer and one gold answer, via math-verify.

Owns the math-verify call only. It runs inside a grading worker process (see ``pool``), so its
own ``SIGALRM`` timeouts are switched off: the pool enforces the deadline from outside.
"""

from __future__ import annotations

import logging


def _parse(answer: str) -> list:
    from math_verify import parse

    # Wrapping in \boxed{} makes the LaTeX extractor take the whole answer (tuples, intervals,
    # \text{(C)}, "69,84" as a set); fall back to $...$ and the raw string.
    for candidate in (f"\\boxed{{{answer}}}", f"${answer}$", answer):
        parsed = parse(candidate, parsing_timeout=None)
        if parsed:
            return parsed
    return []


def math_verify_equal(prediction: str, gold: str) -> bool:
    """True when ``prediction`` is mathematically equivalent to ``gold``."""
    from math_verify import verify

    gold_parsed = _parse(gold)
    pred_parsed = _parse(prediction)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def warmup() -> None:
    """Import math-verify and its LaTeX parser once, before any item's clock starts."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    math_verify_equal("\\frac{1}{2}", "0.5")
