"""The ``generate`` flow in-process on the Prefect test harness, with the scripted fakes:
routing recorded in the store, outputs materialised, Prefect artifacts and task names,
caching by artifact key (re-run skips; a Stage-3 config change recomputes Stage 3 + pairs
only), a transient failure retried, a permanent failure recorded on the run.
"""

from __future__ import annotations

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.generate import generate_flow
from sphere_core.backends.cache import clear_caches
from sphere_core.data.ingest import question_id
from sphere_core.errors import InputDataError
from sphere_core.storage.repo import open_repository
from sphere_core.storage.run_view import RunView
from tests.fakes import EXPECTED, FakeGenerator, fake_question
from tests.flows.orch_fakes import SCENARIO_MIX, fake_overrides, flaky_loads


@pytest.fixture(autouse=True)
def _fresh_backends(sphere_home):
    clear_caches()
    FakeGenerator.instances.clear()
    yield
    clear_caches()


def _generate_calls(small: bool | None = None) -> int:
    return sum(len(g.calls) for g in FakeGenerator.instances if small is None or g.small == small)


def _task_runs(flow_run_id: str):
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def _qid(row: dict) -> str:
    return question_id(row["problem"], row["answer"])


def _run_record(home, run_id):
    with open_repository(None, home) as repo:
        return repo.get_run(run_id), repo.routes_for_run(run_id)


def test_generate_routes_records_and_publishes(prefect_api, sphere_home, questions_file):
    summary = generate_flow(run_id="gen-a", overrides=fake_overrides(questions_file))

    run, events = _run_record(sphere_home, "gen-a")
    assert run["status"] == "completed" and run["kind"] == "generate" and run["prefect_flow_run_id"]
    expected = {
        (_qid(fake_question(s, index=i)), stage): decision
        for i, s in enumerate(SCENARIO_MIX)
        for stage, decision in EXPECTED[s].items()
    }
    assert {(e["question_id"], e["stage"]): e["decision"] for e in events} == expected
    assert all(e["artifact_key"] == summary.artifact_keys[e["stage"]] for e in events)

    out = sphere_home / "runs" / "gen-a"
    train = pd.read_parquet(out / "pairs" / "train.parquet")
    evals = pd.read_parquet(out / "pairs" / "eval.parquet")
    assert len(train) + len(evals) == summary.pairs_train + summary.pairs_eval > 0
    assert set(train["run_id"]) == {"gen-a"}
    view = RunView(sphere_home, "gen-a")
    for stage in ("stage1", "stage2", "stage3"):
        assert len(view.routing(stage)) and len(view.tree(stage))  # the view points at artifacts
        assert set(view.routing(stage)["run_id"]) == {"gen-a"}
    assert not (out / "routing").exists() and not (out / "tree").exists()  # no second copy

    names = {t.name for t in _task_runs(run["prefect_flow_run_id"])}
    assert {f"stage{s}-shard-0000{i}" for s in (1, 2, 3) for i in range(4)} <= names  # 16 q / 4
    assert {"ingest", "assemble-pairs", "finalize"} <= names
    with get_client(sync_client=True) as client:
        routing = client.read_artifacts()
    keys = {a.key for a in routing}
    assert {"gen-a-routing", "gen-a-rejects", "gen-a-summary"} <= keys


def test_rerun_is_cached_and_config_change_recomputes_downstream_only(
    prefect_api, sphere_home, questions_file
):
    base = fake_overrides(questions_file)
    first = generate_flow(run_id="cache-1", overrides=base)
    cold_calls = _generate_calls()
    assert cold_calls > 0

    again = generate_flow(run_id="cache-2", overrides=base)
    assert _generate_calls() == cold_calls  # every shard skipped: no generation at all
    assert again.artifact_keys == first.artifact_keys
    a = pd.read_parquet(sphere_home / "runs" / "cache-1" / "pairs" / "train.parquet").drop(
        columns="run_id"
    )
    b = pd.read_parquet(sphere_home / "runs" / "cache-2" / "pairs" / "train.parquet").drop(
        columns="run_id"
    )
    pd.testing.assert_frame_equal(a, b)

    small_before, policy_before = _generate_calls(small=True), _generate_calls(small=False)
    changed = generate_flow(
        run_id="cache-3", overrides=base + ["models.small={backend: fake, path: fake-small-v2}"]
    )
    keys_a, keys_c = first.artifact_keys, changed.artifact_keys
    assert keys_c["questions"] == keys_a["questions"]
    assert keys_c["stage1"] == keys_a["stage1"] and keys_c["stage2"] == keys_a["stage2"]
    assert keys_c["stage3"] != keys_a["stage3"] and keys_c["pairs"] != keys_a["pairs"]
    assert _generate_calls(small=False) == policy_before  # stage 1/2 not recomputed
    assert _generate_calls(small=True) > small_before  # stage 3 recomputed


def test_transient_failure_is_retried(prefect_api, sphere_home, questions_file):
    summary = generate_flow(
        run_id="flaky", overrides=fake_overrides(questions_file, backend="fake-flaky")
    )
    assert summary.pairs_train > 0
    assert flaky_loads(sphere_home) == 3  # policy: failed, then loaded on the retry; pi_small: once
    run, _ = _run_record(sphere_home, "flaky")
    assert run["status"] == "completed"
    retried = [t for t in _task_runs(run["prefect_flow_run_id"]) if t.run_count > 1]
    assert retried and all(t.state.is_completed() for t in retried)


def test_permanent_failure_is_recorded_and_not_retried(prefect_api, sphere_home, tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputDataError, match="nope.jsonl"):
        generate_flow(run_id="broken", overrides=fake_overrides(missing))
    run, events = _run_record(sphere_home, "broken")
    assert run["status"] == "failed" and events == []
    assert run["error"].startswith("InputDataError") and "nope.jsonl" in run["error"]
    ingest = [t for t in _task_runs(run["prefect_flow_run_id"]) if t.name == "ingest"]
    assert len(ingest) == 1 and ingest[0].run_count == 1 and ingest[0].state.is_failed()
