"""Shared set-up of the search benchmarks: the judge-PRM search config, the models and the tasks.

Imported by ``generation_anchor.py`` and ``search_throughput.py`` (run as ``python bench/X.py``,
which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import time
from pathlib import Path

from sphere_core.config import SphereConfig, resolve_config
from sphere_core.search.pruned import SearchTask


def search_config(
    *,
    questions: int,
    E: int,
    depth: int,
    step_tokens: int,
    completion: int,
    model: str,
    device: str,
    dtype: str,
) -> SphereConfig:
    """Stage-1 search over GSM8K-train with the judge PRM on the policy model."""
    return resolve_config(
        overrides=[
            "data.path=builtin:gsm8k_train",
            f"data.limit={questions}",
            f"search.num_candidates={E}",
            f"search.max_depth={depth}",
            f"search.max_step_tokens={step_tokens}",
            f"search.completion_max_tokens={completion}",
            "prm.kind=judge",
            f"models.policy.path={model}",
            f"models.policy.device={device}",
            f"models.policy.dtype={dtype}",
        ]
    )


def load_setup(cfg: SphereConfig, home_arg: str | None, questions: int):
    """(generator, judge PRM, model load seconds, search tasks) for ``cfg``."""
    from sphere_core.backends.cache import get_generator, get_prm
    from sphere_core.data.ingest import ingest_file
    from sphere_core.paths import sphere_home
    from sphere_core.prompts import solve_messages

    home = Path(home_arg) if home_arg else sphere_home()
    home.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gen = get_generator(cfg.models.policy, home)
    prm = get_prm(cfg, home)
    load_s = time.perf_counter() - t0
    qs = ingest_file(cfg.data.path, cfg.data).questions.head(questions)
    tasks = [
        SearchTask(r["question_id"], r["problem"], str(r["answer"]), solve_messages(r["problem"]))
        for r in qs.to_dict("records")
    ]
    return gen, prm, load_s, tasks
