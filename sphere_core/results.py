"""Typed results of the flows: what each flow returns and the CLI prints (no Prefect here).

Plain dataclasses (no Prefect, no live objects), so a parent flow reads its sub-flows'
results by attribute instead of guessing dictionary keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GenerateResult:
    run_id: str
    round: int
    run_dir: str
    questions: int
    rejected: int
    routing_counts: list[dict[str, Any]]  # {"stage", "decision", "questions"}
    pairs_train: int
    pairs_eval: int
    dropped_pairs: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    artifact_keys: dict[str, str] = field(default_factory=dict)
    search: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    error_note: str | None = None  # errors within the budget (``sphere_core.error_budget``)

    @property
    def pairs(self) -> int:
        return self.pairs_train + self.pairs_eval

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingResult:
    run_id: str
    round: int
    adapter_path: str | None = None
    merged_path: str | None = None
    best_checkpoint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None  # why no training happened

    @property
    def model_path(self) -> str | None:
        """The trained model to evaluate: the merged dir when written, else the adapter."""
        return self.merged_path or self.adapter_path


@dataclass
class EvaluationResult:
    run_id: str
    out_dir: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # evaluation summary rows


@dataclass
class ReportResult:
    run_id: str
    path: str
    accuracy_rows: int = 0


@dataclass
class RoundResult:
    round: int
    generate: GenerateResult
    train: TrainingResult
    evaluate: EvaluationResult | None


@dataclass
class PipelineResult:
    run_id: str
    rounds: list[RoundResult]
    report: ReportResult | None = None
    status: str = "completed"

    @property
    def last(self) -> RoundResult:
        return self.rounds[-1]
