"""``Grader``: decide whether predicted answers match gold answers.

Owns the grading policy: the answer fallback (``grading.fallback``, which a call may override:
the search stages grade strictly with ``fallback="none"``), a cheap exact match after
normalisation first, then math-verify. The whole grading of a model text (extraction included)
runs in a worker process under the per-item timeout (``pool.TimeoutPool``, ``item.grade_item``);
only the exact match of two short, already extracted answers runs in the caller. A timed-out or
failed item counts as not correct and is reported in its ``Verdict`` and in
``Grader.timeouts``/``errors``. ``get_grader`` keeps one process-wide instance per grading config.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self

from sphere_core.errors import GradingError
from sphere_core.grading.extract import (
    FALLBACKS,
    MAX_ANSWER_CHARS,
    extract_answer,
    normalize_answer,
)
from sphere_core.grading.item import CORRECT, grade_item
from sphere_core.grading.pool import TimeoutPool

log = logging.getLogger(__name__)

VerifyFn = Callable[[str, str], bool]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    status: str  # exact | verified | mismatch | no_answer | timeout | error
    detail: str = ""
    extracted: str | None = None  # the answer graded (None: none found, or timed out first)


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
        self.fallback = self._check_fallback(fallback)
        if verify_fn is None:
            from sphere_core.grading.equivalence import math_verify_equal
            from sphere_core.grading.equivalence import warmup as mv_warmup

            verify_fn, warmup = math_verify_equal, mv_warmup
        self.timeout_s = timeout_s
        self.workers = workers
        self._pool = TimeoutPool(
            functools.partial(grade_item, verify_fn),
            workers=workers,
            timeout_s=timeout_s,
            warmup=warmup,
        )
        self._lock = threading.Lock()
        self.timeouts = 0
        self.errors = 0

    @staticmethod
    def _check_fallback(fallback: str) -> str:
        if fallback not in FALLBACKS:
            raise GradingError(f"unknown grading.fallback {fallback!r}; choose one of {FALLBACKS}")
        return fallback

    @staticmethod
    def _check_lengths(what: str, items: Sequence, golds: Sequence) -> None:
        if len(items) != len(golds):
            raise GradingError(
                f"expected one gold answer per {what}, got {len(items)} {what}s "
                f"and {len(golds)} golds"
            )

    # -- public API ------------------------------------------------------------------
    def verify_detailed(
        self,
        predictions: Sequence[str | None],
        golds: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> list[Verdict]:
        """Verdicts for answers that are already extracted (``None``: no answer)."""
        self._check_lengths("prediction", predictions, golds)
        verdicts: list[Verdict | None] = [None] * len(predictions)
        slow: dict[int, tuple] = {}
        for i, (pred, gold) in enumerate(zip(predictions, golds)):
            pred_s, gold_s = (None if pred is None else str(pred)), str(gold)
            if pred_s is None or not pred_s.strip():
                verdicts[i] = Verdict(False, "no_answer", extracted=pred_s)
            elif (
                len(pred_s) <= MAX_ANSWER_CHARS
                and len(gold_s) <= MAX_ANSWER_CHARS
                and normalize_answer(pred_s) == normalize_answer(gold_s)
            ):
                verdicts[i] = Verdict(True, "exact", extracted=pred_s)
            else:
                slow[i] = (gold_s, None, pred_s)
        self._run(slow, verdicts, progress)
        return [v for v in verdicts if v is not None]

    def verify(self, predictions: Sequence[str | None], golds: Sequence[str]) -> list[bool]:
        return [v.correct for v in self.verify_detailed(predictions, golds)]

    def extract(self, text: str | None, fallback: str | None = None) -> str | None:
        """The final answer of ``text`` (in this process; linear time)."""
        return extract_answer(text, fallback=self._check_fallback(fallback or self.fallback))

    def grade_texts_detailed(
        self,
        texts: Sequence[str | None],
        golds: Sequence[str],
        fallback: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Verdict]:
        """Extract each text's final answer and verify it, each item under the timeout.

        ``fallback`` overrides ``grading.fallback`` for this call (``"none"``: only a
        paper-format final answer or a ``\\boxed{}`` counts).
        """
        fallback = self._check_fallback(fallback or self.fallback)
        self._check_lengths("text", texts, golds)
        verdicts: list[Verdict | None] = [None] * len(texts)
        slow: dict[int, tuple] = {}
        for i, (text, gold) in enumerate(zip(texts, golds)):
            if text is None or not str(text).strip():
                verdicts[i] = Verdict(False, "no_answer")
            else:
                slow[i] = (str(gold), str(text), None, fallback)
        self._run(slow, verdicts, progress)
        return [v for v in verdicts if v is not None]

    def grade_texts(
        self,
        texts: Sequence[str | None],
        golds: Sequence[str],
        fallback: str | None = None,
    ) -> list[tuple[str | None, bool]]:
        """Extract each text's final answer and verify it: ``[(extracted, correct), ...]``."""
        return [(v.extracted, v.correct) for v in self.grade_texts_detailed(texts, golds, fallback)]

    def _run(
        self,
        items: dict[int, tuple],
        verdicts: list[Verdict | None],
        progress: Callable[[int], None] | None,
    ) -> None:
        """Grade ``items`` (index -> ``grade_item`` arguments) in the pool into ``verdicts``."""
        if progress is not None and len(verdicts) > len(items):
            progress(len(verdicts) - len(items))
        if not items:
            return
        with self._lock:
            results = self._pool.map(list(items.values()), progress=progress)
        for i, res in zip(items, results):
            if res.status == "ok":
                extracted, status, detail = res.value
                verdicts[i] = Verdict(status in CORRECT, status, detail, extracted)
                if status != "error":
                    continue
            else:
                status, detail = res.status, res.detail
                verdicts[i] = Verdict(False, status, detail)
            if status == "timeout":
                self.timeouts += 1
            else:
                self.errors += 1
            gold, text_or_pred = items[i][0], items[i][1] or items[i][2]
            log.warning(
                "grading %s for %r vs gold %r: %s",
                status,
                str(text_or_pred)[-80:],
                gold[:80],
                detail,
            )

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
