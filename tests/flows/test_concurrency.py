"""Concurrent runs over the same questions, in subprocesses through the CLI: with different run
ids or the same run id, every shard is computed exactly once (a shard is claimed before it is
computed; a run that finds a shard another run finished uses it), both runs complete, and their
outputs are identical. Deterministic: the outcome does not depend on timing (set SPHERE_REPEAT
to repeat it)."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from sphere_core.storage.repo import open_repository
from tests.flows.conftest import sphere_cli
from tests.flows.orch_fakes import fake_overrides

pytestmark = pytest.mark.slow


def _sets(questions_file) -> list[str]:
    return [
        arg for o in fake_overrides(questions_file, backend="fake-slow") for arg in ("--set", o)
    ]


def _calls(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _events(home, run_id) -> pd.DataFrame:
    with open_repository(None, home) as repo:
        rows = repo.routes_for_run(run_id)
    df = pd.DataFrame(rows)[["question_id", "stage", "decision", "reason"]]
    assert not df.duplicated(["question_id", "stage"]).any()
    return df.astype(str).sort_values(["question_id", "stage"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference_calls(prefect_api, tmp_path_factory):
    """Generate calls of one uninterrupted run (the work every concurrent pair must not exceed)."""
    from tests.fakes import write_fake_questions
    from tests.flows.orch_fakes import SCENARIO_MIX

    tmp = tmp_path_factory.mktemp("ref")
    questions = write_fake_questions(tmp / "questions.jsonl", SCENARIO_MIX)
    calls = tmp / "calls.txt"
    done = sphere_cli(
        ["generate", "--run-id", "ref", *_sets(questions)],
        tmp / "home",
        prefect_api,
        {"SPHERE_FAKE_DELAY_S": "0", "SPHERE_FAKE_CALLS_FILE": str(calls)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return questions, _calls(calls), _events(tmp / "home", "ref")


@pytest.mark.parametrize("repeat", range(int(os.environ.get("SPHERE_REPEAT", "1"))))
@pytest.mark.parametrize("same_id", [False, True], ids=["two-run-ids", "one-run-id"])
def test_concurrent_runs_compute_each_shard_once(
    prefect_api, tmp_path, reference_calls, same_id, repeat
):
    questions, expected_calls, expected_events = reference_calls
    home, calls = tmp_path / "home", tmp_path / "calls.txt"
    env = {"SPHERE_FAKE_DELAY_S": "0.05", "SPHERE_FAKE_CALLS_FILE": str(calls)}
    run_ids = ["twin", "twin"] if same_id else ["twin-a", "twin-b"]
    procs = [
        sphere_cli(
            ["generate", "--run-id", rid, *_sets(questions)], home, prefect_api, env, wait=False
        )
        for rid in run_ids
    ]
    for rid, proc in zip(run_ids, procs):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{rid}: {err[-2000:]}"
    assert _calls(calls) == expected_calls  # every shard computed once, by one of the two runs
    with open_repository(None, home) as repo:
        assert {repo.get_run(r)["status"] for r in run_ids} == {"completed"}
    for rid in set(run_ids):
        pd.testing.assert_frame_equal(
            _events(home, rid).drop(columns="reason"), expected_events.drop(columns="reason")
        )
