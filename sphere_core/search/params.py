"""Search parameters for one stage, resolved from the config (E, keep-k, sampling, seeds).

Owns the keep-k generalisation and the per-stage seed offsets; knows nothing about models.
"""

from __future__ import annotations

from dataclasses import dataclass

from sphere_core.config import SphereConfig

STAGE_SEED_OFFSET = {"stage1": 0, "stage2": 1000, "stage3": 2000}
"""Each stage samples from its own seed range so that stages never share random draws."""


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

    def call_seed(self, depth: int) -> int:
        """Seed of the one generate call made at ``depth`` (independent of shard contents)."""
        return self.seed + depth

    @classmethod
    def for_stage(cls, cfg: SphereConfig, stage: str) -> SearchParams:
        s = cfg.search
        n = s.num_candidates * (s.small_candidates_factor if stage == "stage3" else 1)
        return cls(
            num_candidates=n,
            keep=resolve_keep(s.keep, s.keep_fraction, n),
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_depth=s.max_depth,
            max_step_tokens=s.max_step_tokens,
            delimiter=s.step_delimiter,
            seed=s.seed + STAGE_SEED_OFFSET[stage],
            use_orm=cfg.reward.use_orm and stage in ("stage2", "stage3"),
        )
