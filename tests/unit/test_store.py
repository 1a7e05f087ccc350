"""Metadata repository on SQLite and PostgreSQL: runs, idempotent routing events, history
across runs, checkpoints, evaluations, clear errors, and concurrent writers on SQLite."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading

import pandas as pd
import pytest

from sphere_core.errors import StoreError
from sphere_core.schemas import ROUTING_COLUMNS
from sphere_core.storage import db
from sphere_core.storage.repo import open_repository
from tests.unit import test_store_fixtures as _fixtures

database_url = _fixtures.database_url
repo = _fixtures.repo

CONFIG = {"search": {"expansions": 5, "temperature": 0.8}, "data": {"path": "builtin:demo"}}


def routing_df(run_id: str, qids, stage="stage1", decision="pair", **extra) -> pd.DataFrame:
    rows = []
    for i, q in enumerate(qids):
        row = {c: None for c in ROUTING_COLUMNS}
        row.update(
            run_id=run_id,
            question_id=q,
            stage=stage,
            decision=decision,
            reason=f"max correct, min wrong ({i})",
            answer_max="42",
            answer_min="41",
            correct_max=True,
            correct_min=False,
            reward_max=0.9,
            reward_min=0.1,
        )
        row.update(extra)
        rows.append(row)
    return pd.DataFrame(rows, columns=ROUTING_COLUMNS)


def questions_df(qids) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "question_id": list(qids),
            "problem": [f"What is {q}?" for q in qids],
            "answer": ["42"] * len(qids),
            "source": "gsm8k_demo.jsonl",
            "source_row": range(1, len(qids) + 1),
        }
    )


def test_create_run_is_idempotent_and_round_trips_config(repo):
    first = repo.create_run("r1", CONFIG, "abc123", kind="generate")
    again = repo.create_run("r1", CONFIG, "abc123", kind="generate", flow_run_id="flow-9")
    assert first["status"] == "pending" and first["config"] == CONFIG
    assert again["prefect_flow_run_id"] == "flow-9"
    run = repo.get_run("r1")
    assert run["config"] == CONFIG and run["kind"] == "generate"
    assert run["created_at"].endswith("+00:00") and run["finished_at"] is None
    assert len(repo.list_runs()) == 1
    changed = {**CONFIG, "search": {"num_candidates": 9}}
    updated = repo.create_run("r1", changed, "different")
    assert updated["config"] == changed and updated["config_hash"] == "different"
    assert updated["created_at"] == first["created_at"] and len(repo.list_runs()) == 1
    assert repo.get_run("nope") is None


def test_run_status_lifecycle_and_errors(repo):
    repo.create_run("r1", CONFIG, "h")
    repo.set_run_status("r1", "running", flow_run_id="f1")
    assert repo.get_run("r1")["status"] == "running"
    repo.set_run_status("r1", "failed", error="boom: shard 3")
    run = repo.get_run("r1")
    assert (run["status"], run["error"], run["prefect_flow_run_id"]) == (
        "failed",
        "boom: shard 3",
        "f1",
    )
    assert run["finished_at"] is not None and run["updated_at"] >= run["created_at"]
    with pytest.raises(StoreError, match="invalid run status 'done'"):
        repo.set_run_status("r1", "done")
    with pytest.raises(StoreError, match="unknown run 'ghost'"):
        repo.set_run_status("ghost", "running")


def test_list_runs_newest_first_with_limit(repo):
    for i in range(4):
        repo.create_run(f"run-{i}", CONFIG, "h")
    assert [r["run_id"] for r in repo.list_runs(limit=2)] == ["run-3", "run-2"]


def test_recording_events_twice_leaves_no_duplicates_and_updates(repo):
    repo.create_run("r1", CONFIG, "h")
    repo.upsert_questions(questions_df(["q1", "q2", "q3"]))
    assert repo.record_routing_events(routing_df("r1", ["q1", "q2", "q3"]), artifact_key="k1") == 3
    retry = routing_df("r1", ["q1", "q2", "q3"], decision="to_correction", correct_max=False)
    assert repo.record_routing_events(retry, artifact_key="k2") == 3
    events = repo.routes_for_run("r1")
    assert len(events) == 3
    assert {e["decision"] for e in events} == {"to_correction"}
    assert {e["artifact_key"] for e in events} == {"k2"}
    assert events[0]["correct_max"] is False and events[0]["reward_max"] == pytest.approx(0.9)
    # a second stage is a separate event
    repo.record_routing_events(routing_df("r1", ["q1"], stage="stage2", decision="unresolved"))
    assert len(repo.routes_for_run("r1")) == 4


def test_duplicate_keys_in_one_frame_keep_the_last_row(repo):
    repo.create_run("r1", CONFIG, "h")
    df = pd.concat([routing_df("r1", ["q1"]), routing_df("r1", ["q1"], decision="no_error")])
    assert repo.record_routing_events(df) == 1
    assert [e["decision"] for e in repo.routes_for_run("r1")] == ["no_error"]


def test_missing_values_become_null(repo):
    repo.create_run("r1", CONFIG, "h")
    df = routing_df(
        "r1",
        ["q1"],
        decision="error",
        reward_max=float("nan"),
        correct_max=None,
        answer_max=None,
        error="generation timed out",
    )
    df["reward_min"] = pd.array([pd.NA], dtype="Float64")
    repo.record_routing_events(df)
    (event,) = repo.routes_for_run("r1")
    assert (
        event["reward_max"] is None and event["reward_min"] is None and event["correct_max"] is None
    )
    assert event["answer_max"] is None and event["error"] == "generation timed out"


def test_events_for_unknown_questions_get_placeholders_filled_later(repo):
    repo.create_run("r1", CONFIG, "h")
    repo.record_routing_events(routing_df("r1", ["qx"]))
    assert repo.get_question("qx")["problem"] is None
    repo.upsert_questions(questions_df(["qx"]))
    q = repo.get_question("qx")
    assert (
        q["problem"] == "What is qx?" and q["answer"] == "42" and q["source"] == "gsm8k_demo.jsonl"
    )
    repo.upsert_questions(questions_df(["qx"]).assign(source="other.jsonl"))
    assert repo.get_question("qx")["source"] == "gsm8k_demo.jsonl"  # first source kept


def test_events_for_unknown_run_or_bad_frame_raise(repo):
    with pytest.raises(StoreError, match=r"unknown run\(s\) \['ghost'\]"):
        repo.record_routing_events(routing_df("ghost", ["q1"]))
    with pytest.raises(StoreError, match="missing column"):
        repo.record_routing_events(pd.DataFrame({"run_id": ["r"]}))
    assert repo.record_routing_events(routing_df("r", [])) == 0


def test_routes_for_question_is_history_across_runs(repo):
    repo.create_run("old", CONFIG, "h", kind="generate")
    repo.create_run("new", CONFIG, "h2", kind="pipeline")
    repo.record_routing_events(routing_df("old", ["q1", "q2"], decision="to_correction"))
    repo.record_routing_events(routing_df("old", ["q1"], stage="stage2", decision="unresolved"))
    repo.record_routing_events(routing_df("new", ["q1"], decision="pair"))
    history = repo.routes_for_question("q1")
    assert [(e["run_id"], e["stage"], e["decision"]) for e in history] == [
        ("old", "stage1", "to_correction"),
        ("old", "stage2", "unresolved"),
        ("new", "stage1", "pair"),
    ]
    assert history[0]["run_kind"] == "generate" and history[2]["run_status"] == "pending"
    assert repo.routes_for_question("unknown") == []


def test_checkpoints_and_evaluations_upsert(repo):
    repo.create_run("r1", CONFIG, "h")
    repo.record_checkpoint("r1", "/ckpt/final", "dpo", {"loss": 0.5})
    repo.record_checkpoint("r1", "/ckpt/final", "dpo", {"loss": 0.4})
    (ckpt,) = repo.checkpoints_for_run("r1")
    assert ckpt["metrics"] == {"loss": 0.4}
    repo.record_evaluation("r1", "base", "gsm8k", "pass@1", 0.25, 8, {"k": 1})
    repo.record_evaluation("r1", "base", "gsm8k", "pass@1", 0.375, 8)
    repo.record_evaluation("r1", "trained", "gsm8k", "pass@1", 0.5, 8)
    evals = repo.evaluations_for_run("r1")
    assert [(e["model_label"], e["value"]) for e in evals] == [("base", 0.375), ("trained", 0.5)]
    with pytest.raises(StoreError, match="unknown run 'ghost'"):
        repo.record_evaluation("ghost", "base", "gsm8k", "pass@1", 0.1, 1)


def test_url_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("SPHERE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPHERE_DATABASE_URL", raising=False)
    assert db.resolve_database_url() == f"sqlite:///{tmp_path / 'home' / 'sphere.db'}"
    assert db.resolve_database_url(home=tmp_path) == f"sqlite:///{tmp_path / 'sphere.db'}"
    monkeypatch.setenv("SPHERE_DATABASE_URL", "sqlite:///env.db")
    assert db.resolve_database_url(home=tmp_path) == "sqlite:///env.db"
    assert db.resolve_database_url("sqlite:///explicit.db") == "sqlite:///explicit.db"


def test_sqlite_uses_wal_and_foreign_keys(tmp_path):
    repository = open_repository(f"sqlite:///{tmp_path / 'x' / 'sphere.db'}")
    with repository, repository.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10000


def test_unreachable_postgres_is_a_clear_error_without_password():
    with pytest.raises(StoreError) as info:
        open_repository("postgresql+psycopg://sphere:s3cret@127.0.0.1:1/nodb")
    message = str(info.value)
    assert message.startswith(
        "cannot connect to database postgresql+psycopg://sphere:***@127.0.0.1:1/nodb: "
    )
    assert "s3cret" not in message


def test_unsupported_or_unmigrated_database(tmp_path):
    with pytest.raises(StoreError, match="unsupported database"):
        open_repository("mysql://u@localhost/db")
    with pytest.raises(StoreError, match="not migrated; run `sphere db upgrade`"):
        open_repository(f"sqlite:///{tmp_path / 'fresh.db'}", upgrade=False)


def _write_events(url: str, run_id: str, n_batches: int) -> int:
    """Worker (separate process or thread): migrate-on-open, then many small transactions."""
    with open_repository(url) as repository:
        repository.create_run(run_id, CONFIG, "h")
        for b in range(n_batches):
            qids = [f"q{b}-{i}" for i in range(5)]
            repository.upsert_questions(questions_df(qids))
            repository.record_routing_events(routing_df(run_id, qids))
            repository.record_routing_events(routing_df(run_id, qids))  # a retry: no duplicates
        repository.set_run_status(run_id, "completed")
        return len(repository.routes_for_run(run_id))


def test_two_processes_write_concurrently_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"  # fresh: both processes also race to migrate
    ctx = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futures = [pool.submit(_write_events, url, f"run-{p}", 20) for p in range(2)]
        counts = [f.result(timeout=120) for f in futures]
    assert counts == [100, 100]
    with open_repository(url) as repository:
        for p in range(2):
            events = repository.routes_for_run(f"run-{p}")
            assert len(events) == 100 and {e["run_id"] for e in events} == {f"run-{p}"}
            assert repository.get_run(f"run-{p}")["status"] == "completed"
        assert len(repository.routes_for_question("q0-0")) == 2  # one per run


def test_threads_share_one_repository(database_url):
    with open_repository(database_url) as repository:
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                repository.create_run(f"t{i}", CONFIG, "h")
                repository.record_routing_events(routing_df(f"t{i}", ["q1", "q2"]))
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(repository.routes_for_question("q1")) == 4
