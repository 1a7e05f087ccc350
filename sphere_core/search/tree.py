"""In-memory search tree: candidate nodes, finished paths, and their Parquet rows.

Owns the node record and the TREE_COLUMNS view of it; the search decides what goes in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sphere_core.grading.extract import has_final_answer  # noqa: F401  (re-exported: a final answer ends a path)


@dataclass(eq=False)
class Node:
    """One generated candidate step. ``path`` is "root" at depth 0 (shared by both paths)."""

    node_id: str
    parent: Node | None
    depth: int
    path: str
    candidate_index: int
    text: str
    mean_logprob: float
    finish_reason: str
    num_tokens: int
    terminal: bool
    prm: float = math.nan
    orm: float = math.nan
    reward: float = math.nan
    selected: bool = False
    completion: bool = False  # written by the completion rollout (not a searched step)

    def steps(self) -> list[str]:
        """Texts of the steps from the root through this node."""
        out: list[str] = []
        node: Node | None = self
        while node is not None:
            out.append(node.text)
            node = node.parent
        return out[::-1]

    def lineage(self) -> list[Node]:
        out: list[Node] = []
        node: Node | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]


@dataclass
class PathResult:
    """A finished path (Sol_max or Sol_min): its nodes from depth 0 to the tail."""

    nodes: list[Node]
    delimiter: str = "\n\n"

    @property
    def steps(self) -> list[str]:
        return [n.text for n in self.nodes]

    @property
    def text(self) -> str:
        return self.delimiter.join(self.steps)

    @property
    def reward(self) -> float:
        """Trajectory score: mean step reward R along the path (NaN for an empty path)."""
        if not self.nodes:
            return math.nan
        return float(sum(n.reward for n in self.nodes) / len(self.nodes))

    @property
    def terminal(self) -> bool:
        return bool(self.nodes) and self.nodes[-1].terminal


@dataclass
class SearchResult:
    """Everything one question's search produced."""

    question_id: str
    max_path: PathResult
    min_path: PathResult
    nodes: list[Node] = field(default_factory=list)

    def tree_rows(
        self, *, run_id: str, stage: str, extract: Callable[[str], str | None] | None = None
    ) -> list[dict]:
        """TREE_COLUMNS rows, one per candidate; ``extract`` fills extracted_answer on terminal
        steps."""
        rows = []
        for n in self.nodes:
            answer = extract(n.text) if (extract is not None and n.terminal) else None
            rows.append(
                {
                    "run_id": run_id,
                    "question_id": self.question_id,
                    "stage": stage,
                    "path": n.path,
                    "depth": n.depth,
                    "node_id": n.node_id,
                    "parent_id": n.parent.node_id if n.parent is not None else None,
                    "candidate_index": n.candidate_index,
                    "text": n.text,
                    "policy_mean_logprob": n.mean_logprob,
                    "prm_score": n.prm,
                    "orm_score": n.orm,
                    "reward": n.reward,
                    "selected": n.selected,
                    "terminal": n.terminal,
                    "finish_reason": n.finish_reason,
                    "extracted_answer": answer,
                    "completion": n.completion,
                    "num_tokens": n.num_tokens,
                }
            )
        return rows
