"""Data contracts shared across stages: in-memory records and the Parquet column sets.

Owns names and types only. Each stage module documents which of these it reads/writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA_VERSION = 1

# questions (output of ingest): one row per accepted question
QUESTION_COLUMNS = ["question_id", "problem", "answer", "source", "source_row", "source_id"]

# rejected input rows (ingest and any stage that rejects an item)
REJECT_COLUMNS = ["source", "row", "reason", "raw"]

# tree: one row per generated candidate step (Stage 1/2/3 search)
TREE_COLUMNS = [
    "run_id",
    "question_id",
    "stage",
    "path",
    "depth",
    "node_id",
    "parent_id",
    "candidate_index",
    "text",
    "policy_mean_logprob",
    "prm_score",
    "orm_score",
    "reward",
    "selected",
    "terminal",
    "finish_reason",
    "extracted_answer",
    "completion",
    "num_tokens",
]
"""``completion`` is True on a step written by the completion rollout that finishes a path which
reached ``search.max_depth`` (or was cut by ``search.max_step_tokens``) without a final answer.
``num_tokens``: the tokens generated for the node (answer-cue tokens included), so a stage's
generated tokens are the sum over its tree rows (missing, i.e. NaN, in runs made before it)."""

# routing: one row per question per stage
ROUTING_COLUMNS = [
    "run_id",
    "question_id",
    "stage",
    "decision",
    "reason",
    "answer_max",
    "answer_min",
    "correct_max",
    "correct_min",
    "reward_max",
    "reward_min",
    "solution_max",
    "solution_min",
    "source_solution",
    "error",
]

# routing decisions: each stage declares the ones it emits (``Stage.decisions``); the ordered
# vocabulary with titles and plot colours is ``sphere_core.stages.all_decisions()``

# pairs; prompt/chosen/rejected are TRL conversational message lists
PAIR_COLUMNS = [
    "prompt",
    "chosen",
    "rejected",
    "question_id",
    "stage",
    "route",
    "granularity",
    "gold_answer",
    "reward_chosen",
    "reward_rejected",
    "answer_chosen",
    "answer_rejected",
    "run_id",
]


@dataclass(frozen=True)
class Question:
    question_id: str
    problem: str
    answer: str
    source: str = ""
    source_row: int = -1
    source_id: str | None = None


@dataclass
class Step:
    """One sampled continuation (a reasoning step, or a whole answer)."""

    text: str
    token_logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "stop"  # "stop" (delimiter) | "eos" | "length" | "error"
    num_tokens: int = 0

    @property
    def mean_logprob(self) -> float:
        if not self.token_logprobs:
            return 0.0
        return float(sum(self.token_logprobs) / len(self.token_logprobs))
