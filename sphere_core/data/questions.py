"""The questions a generate run searches: ingest the configured file for a run.

Owns the run-level rules around ``ingest_file``: prompts must leave room for a step in the
policy's context (counted with the policy's tokenizer), and a file with no usable question is
an ``InputDataError`` naming the file and the first rejection reason. Storage is the caller's.
"""

from __future__ import annotations

from pathlib import Path

from sphere_core.config import SphereConfig
from sphere_core.data.ingest import IngestResult, ingest_file, resolve_data_path
from sphere_core.errors import InputDataError


def question_file(cfg: SphereConfig) -> Path:
    """The resolved question file of ``cfg.data.path`` (must exist)."""
    path = resolve_data_path(cfg.data.path)
    if not path.exists():
        raise InputDataError(f"question file not found: {path} (data.path={cfg.data.path!r})")
    return path


def ingest_for_run(cfg: SphereConfig, home: Path) -> IngestResult:
    """Accepted questions and rejected rows of the run's question file."""
    from sphere_core.backends.cache import get_generator

    path = question_file(cfg)
    policy = cfg.models.policy
    generator = get_generator(policy, home)
    budget = max(1, policy.max_model_len - cfg.search.max_step_tokens)
    data = cfg.data
    if data.offset:  # skip the first `offset` accepted questions, then apply the limit
        limit = None if data.limit is None else data.offset + data.limit
        data = data.model_copy(update={"limit": limit})
    result = ingest_file(
        cfg.data.path, data, max_prompt_tokens=budget, count_tokens=generator.count_tokens
    )
    if cfg.data.offset:
        result.questions = result.questions.iloc[cfg.data.offset :].reset_index(drop=True)
    if result.questions.empty:
        first = result.rejects["reason"].iloc[0] if len(result.rejects) else "empty file"
        if cfg.data.offset:
            first = f"no question left after data.offset={cfg.data.offset}"
        raise InputDataError(
            f"no usable questions in {path}: {len(result.rejects)} row(s) rejected "
            f"(first reason: {first})"
        )
    return result
