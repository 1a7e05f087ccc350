"""Search parameters for one stage, resolved from the config (E, keep-k, sampling, seeds).

Owns the keep-k generalisation and the per-call seeds; the stage decides its E, its seed
offset and whether ORM shaping is on. Knows nothing about models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sphere_core.config import SphereConfig


def resolve_keep(keep: int, keep_fraction: float | None, num_candidates: int) -> int:
    """k paths kept per side and depth: ``keep``, or ``max(1, round(keep_fraction * E))``."""
    if keep_fraction is not None:
        return max(1, round(keep_fraction * num_candidates))
    return keep


@dataclass(frozen=True)
class SearchParams:
    num_candidates: int
    keep: int
    temperature: float
    top_p: float
    top_k: int
    max_depth: int
    max_step_tokens: int
    delimiter: str
    seed: int
    use_orm: bool
    completion_max_tokens: int = 0
    answer_cue_tokens: int = 0

    def call_seed(self, depth: int) -> int:
        """Seed of the one generate call made at ``depth`` (independent of shard contents)."""
        return self.seed + depth

    @property
    def completion_seed(self) -> int:
        """Seed of the completion rollout (after the last depth)."""
        return self.seed + self.max_depth

    @property
    def answer_seed(self) -> int:
        """Seed of the answer-cue call that follows the completion rollout."""
        return self.seed + self.max_depth + 1

    @classmethod
    def for_stage(cls, cfg: SphereConfig, stage: Any) -> SearchParams:
        """Parameters of ``stage`` (a registered stage or its name) under ``cfg``."""
        if isinstance(stage, str):
            from sphere_core.stages import get_stage

            stage = get_stage(stage)
        s = cfg.search
        n = stage.num_candidates(cfg)
        return cls(
            num_candidates=n,
            keep=resolve_keep(s.keep, s.keep_fraction, n),
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_depth=s.max_depth,
            max_step_tokens=s.max_step_tokens,
            delimiter=s.step_delimiter,
            seed=s.seed + stage.seed_offset,
            use_orm=stage.uses_orm(cfg),
            completion_max_tokens=s.completion_max_tokens,
            answer_cue_tokens=s.answer_cue_tokens,
        )
