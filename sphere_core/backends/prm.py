"""Process reward models: the contract every PRM backend shares.

Owns what every PRM backend agrees on:

* ``score(questions, steps_per_candidate, gold_answers=None) -> list[list[float]]`` gives one
  reward in [0, 1] for EVERY step of each candidate (step j scored with steps 0..j as context).
* ``score_last(questions, steps_per_candidate, gold_answers=None) -> list[float]`` gives the
  reward of the LAST step only. The search calls this once per depth with all candidates;
  backends implement it with one unit of work per candidate (one forward pass for ``judge``,
  k rollouts for ``mc-rollout``) instead of one per step. Its value always equals
  ``score(...)[i][-1]``.
* Input checks (same number of questions, candidates and gold answers; every candidate has at
  least one step) and output checks (one finite score in [0, 1] per step), with errors that
  name the broken invariant.
* ``with_score_last(prm)``: every PRM offers ``score_last``. ``BasePRM`` subclasses have it;
  any other object with only ``score`` (a third-party or test PRM) is wrapped in
  ``ScoreLastAdapter``, which derives it as ``score(...)[i][-1]`` with the same checks. So
  callers (the search, the ``prm-last`` ORM) always call ``score_last`` and never fall back.

The backends themselves live one per file: ``prm_judge`` (``judge``, the demo default),
``prm_rollout`` (``mc-rollout``), ``prm_simple`` (``outcome`` and ``random`` for ablations)
and ``qwen_prm`` (``qwen-prm``); each registers itself (``@register_prm``) and
``backends.registry.BUILTIN_BACKENDS`` maps the names to those modules. This module imports
none of them (and no torch).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sphere_core.errors import BackendError

Candidates = Sequence[Sequence[str]]


def check_inputs(
    name: str,
    questions: Sequence[str],
    steps_per_candidate: Candidates,
    gold_answers: Sequence[str] | None = None,
    *,
    need_gold: bool = False,
) -> None:
    """Raise ``BackendError`` unless the batch is well formed; ``name`` labels the messages ("PRM
    judge")."""
    if len(questions) != len(steps_per_candidate):
        raise BackendError(
            f"{name}: expected one question per candidate, got {len(questions)} questions "
            f"for {len(steps_per_candidate)} candidates"
        )
    if need_gold and gold_answers is None:
        raise BackendError(f"{name} needs gold answers (got gold_answers=None)")
    if gold_answers is not None and len(gold_answers) != len(questions):
        raise BackendError(
            f"{name}: expected one gold answer per candidate, got {len(gold_answers)} "
            f"for {len(questions)} candidates"
        )
    for i, steps in enumerate(steps_per_candidate):
        if isinstance(steps, str):
            raise BackendError(f"{name}: candidate {i} must be a list of steps, got a string")
        if len(steps) == 0:
            raise BackendError(f"{name}: candidate {i} has no steps to score")


def check_scores(
    name: str, steps_per_candidate: Candidates, scores: Sequence[Sequence[float]]
) -> list[list[float]]:
    """Validate per-step scores (shape, finiteness, range) and return them as floats."""
    if len(scores) != len(steps_per_candidate):
        raise BackendError(
            f"{name}: expected one score list per candidate ({len(steps_per_candidate)}), "
            f"got {len(scores)}"
        )
    out: list[list[float]] = []
    for i, (got, steps) in enumerate(zip(scores, steps_per_candidate)):
        if len(got) != len(steps):
            raise BackendError(
                f"{name}: candidate {i}: expected one score per step ({len(steps)}), got {len(got)}"
            )
        out.append([_check_value(name, i, s) for s in got])
    return out


def check_last_scores(
    name: str, steps_per_candidate: Candidates, scores: Sequence[float]
) -> list[float]:
    if len(scores) != len(steps_per_candidate):
        raise BackendError(
            f"{name}: expected one last-step score per candidate ({len(steps_per_candidate)}), "
            f"got {len(scores)}"
        )
    return [_check_value(name, i, s) for i, s in enumerate(scores)]


def _check_value(name: str, index: int, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or v > 1.0:
        raise BackendError(f"{name}: candidate {index}: score {value!r} is not in [0, 1]")
    return v


class BasePRM:
    """Template for PRM backends: validation plus a bounded memo of last-step scores.

    Subclasses implement ``_score(questions, steps, golds)`` (all steps) and may override
    ``_score_last`` (default: last element of ``_score``). Scores of deterministic backends
    are memoised by (question, steps, gold) so that the ``prm-last`` ORM, which the search calls
    right after the PRM on the same prefixes, costs nothing extra.
    """

    name: str = "prm"
    needs_gold: bool = False
    memo_size: int = 4096

    def __init__(self) -> None:
        self._memo: OrderedDict[tuple, float] = OrderedDict()
        self._memo_lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"PRM {self.name}"

    # -- public API ------------------------------------------------------------------
    def score(
        self,
        questions: Sequence[str],
        steps_per_candidate: Candidates,
        gold_answers: Sequence[str] | None = None,
    ) -> list[list[float]]:
        check_inputs(
            self.label, questions, steps_per_candidate, gold_answers, need_gold=self.needs_gold
        )
        if not questions:
            return []
        scores = self._score(
            list(questions), _as_lists(steps_per_candidate), _golds(gold_answers, len(questions))
        )
        return check_scores(self.label, steps_per_candidate, scores)

    def score_last(
        self,
        questions: Sequence[str],
        steps_per_candidate: Candidates,
        gold_answers: Sequence[str] | None = None,
    ) -> list[float]:
        check_inputs(
            self.label, questions, steps_per_candidate, gold_answers, need_gold=self.needs_gold
        )
        if not questions:
            return []
        golds = _golds(gold_answers, len(questions))
        steps = _as_lists(steps_per_candidate)
        keys = [(q, tuple(s), g) for q, s, g in zip(questions, steps, golds)]
        with self._memo_lock:
            known = {k: self._memo[k] for k in keys if k in self._memo}
        unique: dict[tuple, int] = {}
        for i, k in enumerate(keys):
            if k not in known:
                unique.setdefault(k, i)
        if unique:
            idx = list(unique.values())
            got = self._score_last(
                [questions[i] for i in idx], [steps[i] for i in idx], [golds[i] for i in idx]
            )
            got = check_last_scores(self.label, [steps[i] for i in idx], got)
            with self._memo_lock:
                for i, s in zip(idx, got):
                    known[keys[i]] = s
                    self._remember(keys[i], s)
        return [known[k] for k in keys]

    # -- for subclasses ----------------------------------------------------------------
    def _score(
        self, questions: list[str], steps: list[list[str]], golds: list[str | None]
    ) -> list[list[float]]:
        raise NotImplementedError

    def _score_last(
        self, questions: list[str], steps: list[list[str]], golds: list[str | None]
    ) -> list[float]:
        return [
            s[-1] for s in check_scores(self.label, steps, self._score(questions, steps, golds))
        ]

    def clear_cache(self) -> None:
        """Forget memoised scores (benchmarks start cold with this)."""
        with self._memo_lock:
            self._memo.clear()

    def _remember(self, key: tuple, value: float) -> None:
        self._memo[key] = value
        self._memo.move_to_end(key)
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)


class ScoreLastAdapter(BasePRM):
    """A PRM that has only ``score``, given ``score_last`` (and BasePRM's checks) on top.

    Nothing is memoised: the wrapped PRM may not be deterministic.
    """

    memo_size = 0

    def __init__(self, inner: Any) -> None:
        super().__init__()
        if not callable(getattr(inner, "score", None)):
            raise BackendError(f"{type(inner).__name__} is not a PRM: it has no score() method")
        self.inner = inner
        self.name = str(getattr(inner, "name", type(inner).__name__))
        self.needs_gold = bool(getattr(inner, "needs_gold", False))

    def _score(self, questions, steps, golds):
        golds_arg = None if all(g is None for g in golds) else golds
        return self.inner.score(questions, steps, golds_arg)


def with_score_last(prm: Any) -> Any:
    """``prm`` itself when it offers ``score_last``, else a ``ScoreLastAdapter`` around it."""
    if prm is None:
        raise BackendError("a PRM is needed here (got None)")
    return prm if callable(getattr(prm, "score_last", None)) else ScoreLastAdapter(prm)


def _as_lists(steps_per_candidate: Candidates) -> list[list[str]]:
    return [[str(s) for s in steps] for steps in steps_per_candidate]


def _golds(gold_answers: Sequence[str] | None, n: int) -> list[str | None]:
    return (
        [None] * n
        if gold_answers is None
        else [None if g is None else str(g) for g in gold_answers]
    )


def prefixes(steps: list[list[str]]) -> tuple[list[tuple[int, int]], list[int]]:
    """Flatten candidates into (candidate, last_step_index) prefixes, every step of each.

    Returns the prefix list and, per candidate, the offset of its first prefix, so that
    per-prefix results can be folded back into per-candidate lists with ``unflatten``.
    """
    items: list[tuple[int, int]] = []
    offsets: list[int] = []
    for c, s in enumerate(steps):
        offsets.append(len(items))
        items.extend((c, j) for j in range(len(s)))
    return items, offsets


def unflatten(
    values: Sequence[float], steps: list[list[str]], offsets: list[int]
) -> list[list[float]]:
    return [list(values[o : o + len(s)]) for o, s in zip(offsets, steps)]
