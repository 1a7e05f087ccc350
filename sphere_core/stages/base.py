"""The ``Stage`` contract: everything one paper stage decides, in one object.

A stage answers six questions, and nothing else:

* **which questions** it takes: every question (``consumes is None``) or the questions an
  upstream stage routed to it (``consumes = Upstream("stage1", "to_correction")``);
* **how it builds messages** for a question (``item``);
* **which model and E** it searches with (``model``, ``num_candidates``, ``uses_orm``,
  ``seed_offset``);
* **how it routes** the graded Sol_max / Sol_min (``route``);
* **which pairs** a routing row yields (``pair_candidates``);
* **which config** can change its output, i.e. keys its artifact (``artifact_config``).

The machinery around stages (search, grading, sharding, storage, pairs invariants) is shared
and lives elsewhere (``stages.runner``, ``pairs``, ``storage.run_outputs``). A stage module
subclasses :class:`BaseStage` and registers an instance with :func:`sphere_core.stages.register`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from sphere_core.config import ModelSpec, SphereConfig
from sphere_core.routing import GradedPath
from sphere_core.storage.keys import weights_id

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Upstream:
    """The routing decision of an earlier stage that sends a question to this stage."""

    stage: str
    decision: str


@dataclass(frozen=True)
class Decision:
    """A routing decision a stage emits: its name (the ``decision`` column), what it means
    (the report's legend) and its plot colour. The registry's ``all_decisions()`` orders them."""

    name: str
    title: str
    color: str


PAIR = Decision("pair", "Sol_max right, Sol_min wrong: one pair", "#2ca02c")
PAIR_INVERTED = Decision(
    "pair_inverted", "Sol_min right, Sol_max wrong: the pair the other way", "#98df8a"
)
ERROR = Decision("error", "the stage's search failed for this question", "#7f7f7f")
COMMON_DECISIONS = (ERROR,)
"""Decisions any stage can emit (``routing.error_row``), after every stage's own."""


@dataclass(frozen=True)
class StageItem:
    """One question as a stage searches it."""

    question_id: str
    problem: str
    gold: str
    messages: Messages
    context: str | None = None  # the solution the stage builds on (shown to the model, or paired)


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def pair_candidate(
    stage: str,
    route: str,
    question: dict,
    prompt: Messages,
    chosen: tuple[str | None, Any, Any, Any],
    rejected: tuple[str | None, Any, Any, Any],
    run_id: str,
) -> dict[str, Any]:
    """A trajectory pair candidate; ``chosen``/``rejected`` = (text, reward, answer, correct).

    The pair invariants (chosen verified right, rejected verified wrong, both finished,
    different texts) are checked by ``sphere_core.pairs``, which drops violators with a reason.
    """
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen[0] or ""}],
        "rejected": [{"role": "assistant", "content": rejected[0] or ""}],
        "question_id": question["question_id"],
        "stage": stage,
        "route": route,
        "granularity": "trajectory",
        "gold_answer": str(question["answer"]),
        "reward_chosen": _num(chosen[1]),
        "reward_rejected": _num(rejected[1]),
        "answer_chosen": chosen[2],
        "answer_rejected": rejected[2],
        "run_id": run_id,
        "_ok_chosen": chosen[3],
        "_ok_rejected": rejected[3],
    }


def side(row: dict, which: str) -> tuple[str | None, Any, Any, Any]:
    """(solution, reward, answer, correct) of the ``max`` or ``min`` path of a routing row."""
    return (
        row.get(f"solution_{which}"),
        row.get(f"reward_{which}"),
        row.get(f"answer_{which}"),
        row.get(f"correct_{which}"),
    )


class BaseStage:
    """Defaults shared by the stages; subclasses set the class attributes and override hooks."""

    name: ClassVar[str]
    title: ClassVar[str]
    consumes: ClassVar[Upstream | None] = None
    decisions: ClassVar[tuple[Decision, ...]] = ()  # what route() can return, in order
    pair_decisions: ClassVar[tuple[str, ...]] = ("pair",)
    seed_offset: ClassVar[int] = 0
    summary: ClassVar[str] = ""  # one paragraph for docs and the report

    # -- model and search -------------------------------------------------------------
    def model(self, cfg: SphereConfig) -> ModelSpec:
        return cfg.models.policy

    def num_candidates(self, cfg: SphereConfig) -> int:
        return cfg.search.num_candidates

    def uses_orm(self, cfg: SphereConfig) -> bool:
        return False

    def artifact_config(self, cfg: SphereConfig) -> dict[str, Any]:
        """The config that can change this stage's output (its artifact key hashes it)."""
        from sphere_core.search.sampling_search import search_config

        d, model = cfg.to_dict(), self.model(cfg)
        return {
            "model": model.model_dump(mode="json"),
            "weights": weights_id(model.path),
            "prm": d["prm"],
            "prm_model": cfg.prm_model.model_dump(mode="json"),
            "search": search_config(cfg),  # the settings of the configured strategy only
            "reward": d["reward"],
            "orm": d["orm"],
            "num_candidates": self.num_candidates(cfg),
            "uses_orm": self.uses_orm(cfg),
        }

    def warnings(self, cfg: SphereConfig) -> list[str]:
        """Sentences worth a warning when this stage runs with ``cfg``."""
        return []

    # -- questions and messages ---------------------------------------------------------
    def messages(self, problem: str, context: str | None) -> Messages:
        """The chat turns this stage's solutions answer (also the prompt of its pairs)."""
        from sphere_core.prompts import solve_messages

        return solve_messages(problem)

    def item(self, cfg: SphereConfig, question: dict, upstream: dict | None) -> StageItem:
        """The search input for ``question`` (``upstream``: the routing row that sent it here)."""
        return StageItem(
            question["question_id"],
            question["problem"],
            str(question["answer"]),
            self.messages(question["problem"], None),
        )

    # -- routing and pairs ----------------------------------------------------------------
    def route(self, run_id: str, item: StageItem, best: GradedPath, worst: GradedPath) -> dict:
        raise NotImplementedError

    def pair_candidates(
        self, row: dict, question: dict, upstream: dict[str, dict], run_id: str
    ) -> list[dict[str, Any]]:
        """Pair candidates of one routing row (``upstream``: stage -> that question's row)."""
        return []
