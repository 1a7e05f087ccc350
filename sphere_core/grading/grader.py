"""``Grader``: decide whether predicted answers match gold answers.

Owns the grading policy: a cheap exact match after normalisation first, then math-verify in a
process pool with a per-item timeout (``pool.TimeoutPool``). A timed-out or failed item counts
as not correct and is reported in its ``Verdict`` and in ``Grader.timeouts``/``errors``.
``get_grader`` keeps one process-wide instance per grading config.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self

from sphere_core.errors import GradingError
from sphere_core.grading.extract import FALLBACKS, extract_answer, normalize_answer
from sphere_core.grading.pool import TimeoutPool

log = logging.getLogger(__name__)

VerifyFn = Callable[[str, str], bool]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    status: str  # exact | verified | mismatch | no_answer | timeout | error
    detail: str = ""


class Grader:
    """Answer checker; a context manager that owns its worker processes.

    ``verify_fn``/``warmup`` are injectable (module-level, picklable functions) so tests can
    exercise the timeout path; the default is math-verify.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        workers: int = 2,
        fallback: str = "last_number",
        *,
        verify_fn: VerifyFn | None = None,
        warmup: Callable[[], None] | None = None,
    ) -> None:
        if fallback not in FALLBACKS:
            raise GradingError(f"unknown grading.fallback {fallback!r}; choose one of {FALLBACKS}")
        if verify_fn is None:
            from sphere_core.grading.equivalence import math_verify_equal
            from sphere_core.grading.equivalence import warmup as mv_warmup

            verify_fn, warmup = math_verify_equal, mv_warmup
        self.timeout_s = timeout_s
        self.workers = workers
        self.fallback = fallback
        self._pool = TimeoutPool(verify_fn, workers=workers, timeout_s=timeout_s, warmup=warmup)
        self._lock = threading.Lock()
        self.timeouts = 0
        self.errors = 0

    # -- public API ------------------------------------------------------------------
    def verify_detailed(
        self,
        predictions: Sequence[str | None],
        golds: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> list[Verdict]:
        if len(predictions) != len(golds):
            raise GradingError(
                f"expected one gold answer per prediction, got {len(predictions)} predictions "
                f"and {len(golds)} golds"
            )
        verdicts: list[Verdict | None] = [None] * len(predictions)
        slow: list[int] = []
        for i, (pred, gold) in enumerate(zip(predictions, golds)):
            if pred is None or not str(pred).strip():
                verdicts[i] = Verdict(False, "no_answer")
            elif normalize_answer(str(pred)) == normalize_answer(str(gold)):
                verdicts[i] = Verdict(True, "exact")
            else:
                slow.append(i)
        if progress is not None and len(predictions) > len(slow):
            progress(len(predictions) - len(slow))
        if slow:
            with self._lock:
                results = self._pool.map(
                    [(str(predictions[i]), str(golds[i])) for i in slow], progress=progress
                )
            for i, res in zip(slow, results):
                if res.status == "ok":
                    verdicts[i] = Verdict(res.value, "verified" if res.value else "mismatch")
                else:
                    if res.status == "timeout":
                        self.timeouts += 1
                    else:
                        self.errors += 1
                    log.warning(
                        "grading %s for prediction %r vs gold %r: %s",
                        res.status,
                        str(predictions[i])[:80],
                        str(golds[i])[:80],
                        res.detail,
                    )
                    verdicts[i] = Verdict(False, res.status, res.detail)
        return [v for v in verdicts if v is not None]

    def verify(self, predictions: Sequence[str | None], golds: Sequence[str]) -> list[bool]:
        return [v.correct for v in self.verify_detailed(predictions, golds)]

    def extract(self, text: str | None) -> str | None:
        return extract_answer(text, fallback=self.fallback)

    def grade_texts(
        self, texts: Sequence[str], golds: Sequence[str]
    ) -> list[tuple[str | None, bool]]:
        """Extract each text's final answer and verify it: ``[(extracted, correct), ...]``."""
        extracted = [self.extract(t) for t in texts]
        return list(zip(extracted, self.verify(extracted, golds)))

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_GRADERS: dict[tuple, Grader] = {}
_GRADERS_LOCK = threading.Lock()


def get_grader(cfg) -> Grader:
    """The process-wide ``Grader`` for a ``GradingConfig`` (workers start on first use)."""
    key = (float(cfg.timeout_s), int(cfg.workers), str(cfg.fallback))
    with _GRADERS_LOCK:
        grader = _GRADERS.get(key)
        if grader is None:
            grader = Grader(timeout_s=key[0], workers=key[1], fallback=key[2])
            _GRADERS[key] = grader
        return grader


def close_graders() -> None:
    with _GRADERS_LOCK:
        for grader in _GRADERS.values():
            grader.close()
        _GRADERS.clear()


atexit.register(close_graders)
