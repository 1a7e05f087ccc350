"""Per-question search state shared by the pruned search, its completion rollout and the
sampling strategy.

Owns the task and counter records (``SearchTask``, ``SearchStats``), a question's two sides
and its nodes (``State``, ``Side``), how a generated step becomes a node (``make_node``), the
prompt that continues a tail (``tail_prompt``) and each side's ranking (``rank``). Calls no
backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sphere_core.schemas import Step
from sphere_core.search.tree import Node, has_final_answer


@dataclass(frozen=True)
class SearchTask:
    """One question to search: ``messages`` are the chat turns the root prompt is built from."""

    question_id: str
    problem: str
    gold_answer: str
    messages: list[dict[str, str]]


@dataclass
class SearchStats:
    """Counters a caller may pass in to accumulate (benchmarks, progress)."""

    generate_calls: int = 0
    prm_calls: int = 0
    orm_calls: int = 0
    generated_tokens: int = 0
    candidates: int = 0
    generate_s: float = 0.0
    prm_s: float = 0.0
    orm_s: float = 0.0
    completions: int = 0
    forced_answers: int = 0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class Side:
    """One side of a question's search: its active tails and its finished ones."""

    name: str  # "max" | "min"
    beams: list[Node] = field(default_factory=list)  # active tails
    finished: list[Node] = field(default_factory=list)


@dataclass
class State:
    """One question in a batch: its root prompt, its sides and every node made for it."""

    task: SearchTask
    root_prompt: str
    sides: dict[str, Side]
    nodes: list[Node] = field(default_factory=list)
    counter: int = 0

    def new_id(self, stage: str) -> str:
        self.counter += 1
        return f"{stage}:{self.task.question_id}:{self.counter}"


def tail_prompt(state: State, tail: Node | None, delimiter: str) -> str:
    """The prompt that continues ``tail`` (the root prompt when ``tail`` is None)."""
    if tail is None:
        return state.root_prompt
    return state.root_prompt + delimiter.join(tail.steps()) + delimiter


def rank(pool: list[Node], side: str) -> list[Node]:
    """Best first for the side; ties go to the earliest candidate (max) / the latest (min)."""
    order = {id(n): i for i, n in enumerate(pool)}
    if side == "max":
        return sorted(pool, key=lambda n: (-n.reward, order[id(n)]))
    return sorted(pool, key=lambda n: (n.reward, -order[id(n)]))


def make_node(
    state: State,
    stage: str,
    step: Step,
    parent: Node | None,
    side: str | None,
    depth: int,
    index: int,
) -> Node:
    """The node of a generated ``step``; terminal if it ended at EOS or states a final answer."""
    text = step.text.strip()
    terminal = step.finish_reason == "eos" or has_final_answer(text)
    return Node(
        node_id=state.new_id(stage),
        parent=parent,
        depth=depth,
        path=side or "root",
        candidate_index=index,
        text=text,
        mean_logprob=step.mean_logprob,
        finish_reason=step.finish_reason,
        num_tokens=step.num_tokens or len(step.token_logprobs),
        terminal=terminal,
    )
