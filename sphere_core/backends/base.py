"""The narrow backend interfaces (generator, PRM, ORM). Implementations live one per file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sphere_core.schemas import Step


@runtime_checkable
class Generator(Protocol):
    """Batched sampler. One call serves every active node of every question (lock-step)."""

    name: str

    def generate_steps(
        self,
        prompts: Sequence[str],
        n: int,
        temperature: float,
        stop: Sequence[str] | None,
        max_tokens: int,
        *,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
    ) -> list[list[Step]]:
        """For each prompt (already chat-formatted text), return n sampled continuations."""
        ...

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """Render chat messages with the model's template to the prompt text."""
        ...

    def count_tokens(self, text: str) -> int: ...


@runtime_checkable
class PRM(Protocol):
    """Process reward model: per-step rewards in [0, 1]."""

    name: str

    def score(
        self,
        questions: Sequence[str],
        steps_per_candidate: Sequence[Sequence[str]],
        gold_answers: Sequence[str] | None = None,
    ) -> list[list[float]]:
        """questions[i] with candidate solution steps_per_candidate[i] -> one score per step."""
        ...


@runtime_checkable
class ORM(Protocol):
    """Outcome reward: one score in [0, 1] for a (partial) solution."""

    name: str

    def score(
        self,
        questions: Sequence[str],
        solutions: Sequence[Sequence[str]],
        gold_answers: Sequence[str] | None = None,
    ) -> list[float]: ...
