"""``orchestration.task_runner=ray``: shard tasks run on a local Ray instance (prefect-ray)
and produce the same routing and pairs as the thread runner."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from flows.generate import generate_flow
from sphere_core.storage.run_view import RunView
from tests.flows.conftest import REPO_ROOT
from tests.flows.orch_fakes import fake_overrides

pytestmark = pytest.mark.slow


def register_fakes() -> None:
    """Ray worker setup hook: make the test doubles known to each worker's registry."""
    import tests.flows.orch_fakes  # noqa: F401


def test_ray_runner_matches_thread_runner(prefect_api, sphere_home, questions_file, tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("prefect_ray")
    from sphere_core.backends.cache import clear_caches
    from tests.fakes import FakeGenerator

    clear_caches()
    FakeGenerator.instances.clear()
    base = fake_overrides(questions_file)
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "worker_process_setup_hook": "tests.flows.test_ray_runner.register_fakes",
            "env_vars": {"PYTHONPATH": pythonpath},  # tests/ is not an installed package
        },
    )
    try:
        on_ray = generate_flow(run_id="on-ray", overrides=base + ["orchestration.task_runner=ray"])
    finally:
        ray.shutdown()
    # the searches ran in Ray worker processes: the driver's fakes generated nothing
    assert sum(len(g.calls) for g in FakeGenerator.instances) == 0
    threads_home = tmp_path / "threads"
    on_threads = generate_flow(
        run_id="on-threads", overrides=base + [f"storage.home={threads_home}"]
    )
    assert on_threads.artifact_keys == on_ray.artifact_keys  # the runner is in no key
    ray_view, threads_view = RunView(sphere_home, "on-ray"), RunView(threads_home, "on-threads")
    for read in (
        lambda v: v.routing("stage1"),
        lambda v: v.routing("stage3"),
        lambda v: v.pairs("train"),
    ):
        a, b = (
            read(v).drop(columns="run_id").reset_index(drop=True) for v in (ray_view, threads_view)
        )
        pd.testing.assert_frame_equal(a, b)
