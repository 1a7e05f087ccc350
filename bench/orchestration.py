"""Orchestration overhead of the ``generate`` flow, printed as one JSON line (last line).

Runs the same shards three ways in fresh homes: (1) sphere_core directly (ingest, run_stage per
shard and stage, build_pairs — no Prefect), (2) the Prefect flow cold, (3) the flow again,
fully cached. ``prefect_overhead_fraction`` = (flow cold - direct) / direct;
``cached_rerun_ratio`` = cached / cold. The one-time Prefect API start (ephemeral server) is
excluded from the flow times and reported as ``prefect_startup_s``.

Work: ``--quick`` uses the scripted fake backends with a fixed sleep per generate call
(deterministic, realistic shape); otherwise the demo preset on the embedded models (minutes on CPU).

    python bench/orchestration.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fake_setup(tmp: Path, n_questions: int, delay: float) -> list[str]:
    sys.path.insert(0, str(REPO))  # the fakes live in tests/ (not an installed package)
    os.environ["SPHERE_FAKE_DELAY_S"] = str(delay)
    from tests.fakes import write_fake_questions
    from tests.flows.orch_fakes import SCENARIO_MIX, fake_overrides

    scenarios = (SCENARIO_MIX * (n_questions // len(SCENARIO_MIX) + 1))[:n_questions]
    path = write_fake_questions(tmp / "questions.jsonl", scenarios)
    return fake_overrides(path, backend="fake-slow", shard_size=8)


def direct(cfg, home: Path) -> float:
    """The same work as the flow, sequentially through sphere_core (no Prefect)."""
    from sphere_core.data.questions import ingest_for_run
    from sphere_core.pairs import build_pairs
    from sphere_core.stages import stages_for
    from sphere_core.stages.runner import run_stage

    start = time.perf_counter()
    questions = ingest_for_run(cfg, home).questions
    size = cfg.orchestration.shard_size
    routing, trees = [], []
    for lo in range(0, len(questions), size):
        shard = questions.iloc[lo : lo + size]
        done: dict = {}
        for stage in stages_for(cfg.routing.stages):
            upstream = done[stage.consumes.stage].routing if stage.consumes else None
            done[stage.name] = run_stage(
                stage.name, cfg, shard, upstream, run_id="direct", home=home
            )
        routing += [p.routing for p in done.values()]
        trees += [p.tree for p in done.values()]
    import pandas as pd

    build_pairs(
        cfg,
        questions,
        pd.concat(routing, ignore_index=True),
        pd.concat(trees, ignore_index=True),
        run_id="direct",
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fake backends with a fixed per-call cost"
    )
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument(
        "--delay",
        type=float,
        default=1.0,
        help="seconds per fake generate call (a batched embedded-model call costs ~1-3 s on CPU)",
    )
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="sphere-bench-orch-"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    overrides = _fake_setup(tmp, args.questions, args.delay) if args.quick else []
    preset = None if args.quick else "demo"

    from sphere_core.backends.cache import clear_caches
    from sphere_core.config import resolve_config

    warm = resolve_config(
        preset, None, overrides + [f"storage.home={tmp / 'warm'}", "data.limit=2"]
    )
    os.environ["SPHERE_FAKE_DELAY_S"], delay = "0", os.environ.get("SPHERE_FAKE_DELAY_S", "0")
    direct(
        warm, tmp / "warm"
    )  # warm-up: model loads and the grader pool start, paid once per process
    os.environ["SPHERE_FAKE_DELAY_S"] = delay
    direct_s = direct(
        resolve_config(preset, None, overrides + [f"storage.home={tmp / 'direct2'}"]),
        tmp / "direct2",
    )

    from flows.prefect_env import configure_prefect_env

    configure_prefect_env(tmp)
    from prefect import flow
    from prefect.client.orchestration import get_client

    start = time.perf_counter()
    with get_client(sync_client=True) as client:  # starts the ephemeral API once
        client.hello()
    flow(name="bench-warmup")(lambda: None)()
    startup_s = time.perf_counter() - start

    from flows.generate import generate_flow

    flow_overrides = overrides + [f"storage.home={tmp / 'flow'}"]
    start = time.perf_counter()
    cold = generate_flow(run_id="bench-cold", preset=preset, overrides=flow_overrides)
    cold_s = time.perf_counter() - start
    clear_caches()
    start = time.perf_counter()
    generate_flow(run_id="bench-cached", preset=preset, overrides=flow_overrides)
    cached_s = time.perf_counter() - start

    result = {
        "bench": "orchestration",
        "mode": "quick-fake" if args.quick else "demo-embedded",
        "questions": cold.questions,
        "shards": len(list((tmp / "flow" / "artifacts" / "questions").glob("*/part-*.parquet"))),
        "direct_s": round(direct_s, 3),
        "flow_cold_s": round(cold_s, 3),
        "flow_cached_s": round(cached_s, 3),
        "prefect_startup_s": round(startup_s, 3),
        "prefect_overhead_fraction": round((cold_s - direct_s) / direct_s, 4),
        "cached_rerun_ratio": round(cached_s / cold_s, 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
