"""Model-free PRMs for the paper's ablations: ``outcome`` and ``random``.

``outcome`` looks only at final answers. A step is *terminal* when it states a final answer,
by the same rule that ends a search path (``grading.extract.has_final_answer``: a paper-format
"Final Answer: The final answer is ..." sentence or a ``\\boxed{}`` with content, read by the
strict extractor without the last-number fallback). Per step:

* 1.0 — terminal, and its answer verifies against the gold answer;
* 0.0 — terminal, and its answer is wrong;
* 0.5 — not terminal (no information about correctness yet; a bare "Final Answer:" with no
  readable answer is not terminal either, exactly as the search keeps expanding it).

It needs gold answers. ``random`` gives each step a uniform [0, 1) score from a seed derived
from ``prm.seed``, the question and the steps up to and including that step (SHA-256), so
scores are deterministic across processes, and ``score_last`` equals the last per-step score.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

from sphere_core.backends.prm import BasePRM, prefixes, unflatten
from sphere_core.backends.registry import register_prm
from sphere_core.config import GradingConfig, SphereConfig

NON_TERMINAL = 0.5
"""Outcome reward of a step (or solution) that has no final answer yet."""


def final_answer(text: str) -> str | None:
    """The final answer ``text`` states (strict extraction, no last-number fallback), or None.

    Not None exactly when ``grading.extract.has_final_answer(text)``.
    """
    from sphere_core.grading import extract_answer

    return extract_answer(text, fallback="none")


def outcome_rewards(
    texts: Sequence[str], golds: Sequence[str], grading: GradingConfig
) -> list[float]:
    """1.0 / 0.0 for texts with a right / wrong final answer, ``NON_TERMINAL`` otherwise."""
    from sphere_core.grading import get_grader

    answers = [final_answer(t) for t in texts]
    out = [NON_TERMINAL] * len(texts)
    to_check = [i for i, answer in enumerate(answers) if answer is not None]
    if to_check:
        verdicts = get_grader(grading).verify(
            [answers[i] for i in to_check], [golds[i] for i in to_check]
        )
        for i, ok in zip(to_check, verdicts):
            out[i] = 1.0 if ok else 0.0
    return out


class OutcomePRM(BasePRM):
    name = "outcome"
    needs_gold = True

    def __init__(self, grading: GradingConfig) -> None:
        super().__init__()
        self.grading = grading

    @classmethod
    def from_config(cls, cfg: SphereConfig, home: Path) -> OutcomePRM:
        return cls(cfg.grading)

    def _score(self, questions, steps, golds):
        items, offsets = prefixes(steps)
        values = outcome_rewards(
            [steps[c][j] for c, j in items], [golds[c] for c, _ in items], self.grading
        )
        return unflatten(values, steps, offsets)

    def _score_last(self, questions, steps, golds):
        return outcome_rewards([s[-1] for s in steps], golds, self.grading)


class RandomPRM(BasePRM):
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)

    @classmethod
    def from_config(cls, cfg: SphereConfig, home: Path) -> RandomPRM:
        return cls(cfg.prm.seed)

    def _value(self, question: str, prefix: Sequence[str]) -> float:
        h = hashlib.sha256(f"{self.seed}\x1e{question}".encode())
        for step in prefix:
            h.update(b"\x1f" + step.encode())
        return random.Random(int.from_bytes(h.digest()[:8], "big")).random()

    def _score(self, questions, steps, golds):
        return [
            [self._value(q, s[: j + 1]) for j in range(len(s))] for q, s in zip(questions, steps)
        ]

    def _score_last(self, questions, steps, golds):
        return [self._value(q, s) for q, s in zip(questions, steps)]


@register_prm("outcome")
def _outcome_factory(cfg: SphereConfig, home: Path) -> OutcomePRM:
    return OutcomePRM.from_config(cfg, home)


@register_prm("random")
def _random_factory(cfg: SphereConfig, home: Path) -> RandomPRM:
    return RandomPRM.from_config(cfg, home)
