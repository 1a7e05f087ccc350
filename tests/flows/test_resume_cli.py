"""Reliability through the CLI in subprocesses against the harness API: SIGKILL mid-stage then
``sphere resume`` equals an uninterrupted run (no duplicate pairs or routing events, finished
shards not recomputed); two concurrent runs do not interfere; a failed run shows in
``sphere runs`` with its error.
"""

from __future__ import annotations

import os
import signal
import time

import pandas as pd
import pytest

from sphere_core.storage.repo import open_repository
from tests.flows.conftest import sphere_cli
from tests.flows.orch_fakes import fake_overrides

pytestmark = pytest.mark.slow


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def _pairs(home, run_id) -> pd.DataFrame:
    base = home / "runs" / run_id / "pairs"
    df = pd.concat(
        [pd.read_parquet(base / f"{s}.parquet").assign(split=s) for s in ("train", "eval")]
    )
    df = df.drop(columns="run_id").astype(str)
    return df.sort_values(["question_id", "stage", "granularity", "chosen"]).reset_index(drop=True)


def _events(home, run_id) -> pd.DataFrame:
    with open_repository(None, home) as repo:
        rows = repo.routes_for_run(run_id)
    df = pd.DataFrame(rows)[
        ["question_id", "stage", "decision", "reason", "answer_max", "answer_min"]
    ]
    assert not df.duplicated(["question_id", "stage"]).any()
    return df.astype(str).sort_values(["question_id", "stage"]).reset_index(drop=True)


def test_sigkill_then_resume_equals_uninterrupted_run(prefect_api, tmp_path, questions_file):
    sets = _sets(fake_overrides(questions_file, backend="fake-slow"))
    ref_home, home = tmp_path / "ref", tmp_path / "killed"
    ref = sphere_cli(
        ["generate", "--run-id", "ref", *sets], ref_home, prefect_api, {"SPHERE_FAKE_DELAY_S": "0"}
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert "run id: ref" in ref.stdout.splitlines()[0]

    proc = sphere_cli(
        ["generate", "--run-id", "victim", *sets],
        home,
        prefect_api,
        {"SPHERE_FAKE_DELAY_S": "0.3"},
        wait=False,
    )
    shards = home / "artifacts" / "stage1_routing"
    deadline = time.time() + 120
    while not list(shards.glob("*/part-*.parquet")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    first = sorted(shards.glob("*/part-*.parquet"))
    assert first, "no stage-1 shard appeared"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in first}
    assert len(list(shards.glob("*/part-*.parquet"))) < 4  # killed mid-stage
    with open_repository(None, home) as repo:
        assert repo.get_run("victim")["status"] == "running"

    resumed = sphere_cli(["resume", "victim"], home, prefect_api, {"SPHERE_FAKE_DELAY_S": "0"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert all(p.stat().st_mtime_ns == m for p, m in done_before.items())  # not recomputed
    with open_repository(None, home) as repo:
        assert repo.get_run("victim")["status"] == "completed"
    pd.testing.assert_frame_equal(_pairs(home, "victim"), _pairs(ref_home, "ref"))
    pd.testing.assert_frame_equal(_events(home, "victim"), _events(ref_home, "ref"))


def test_concurrent_runs_do_not_interfere(prefect_api, tmp_path, questions_file):
    home = tmp_path / "home"
    sets = _sets(fake_overrides(questions_file, backend="fake-slow"))
    env = {"SPHERE_FAKE_DELAY_S": "0.02"}
    procs = {
        rid: sphere_cli(["generate", "--run-id", rid, *sets], home, prefect_api, env, wait=False)
        for rid in ("twin-a", "twin-b")
    }
    for rid, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{rid}: {err[-2000:]}"
    with open_repository(None, home) as repo:
        assert {repo.get_run(r)["status"] for r in procs} == {"completed"}
    pd.testing.assert_frame_equal(_pairs(home, "twin-a"), _pairs(home, "twin-b"))
    pd.testing.assert_frame_equal(_events(home, "twin-a"), _events(home, "twin-b"))
    assert len(_events(home, "twin-a")) == 16 + 10  # 16 stage-1 rows, 6 stage-2, 4 stage-3


def test_failed_run_shows_in_sphere_runs(prefect_api, tmp_path):
    home = tmp_path / "home"
    bad = sphere_cli(
        ["generate", "--run-id", "doomed", *_sets(fake_overrides(tmp_path / "missing.jsonl"))],
        home,
        prefect_api,
    )
    assert bad.returncode != 0
    assert "missing.jsonl" in bad.stderr.strip().splitlines()[-1]
    listed = sphere_cli(["runs"], home, prefect_api)
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if "doomed" in ln)
    assert "failed" in line and "InputDataError" in listed.stdout
