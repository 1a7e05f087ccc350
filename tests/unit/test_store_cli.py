"""`sphere runs`, `sphere routes` and `sphere db` against a store filled through the repository."""

from __future__ import annotations

import csv
import io
import json

import pytest

from flows.cli import main
from sphere_core.storage.repo import open_repository
from tests.unit.test_store import CONFIG, questions_df, routing_df


@pytest.fixture
def filled(sphere_home):
    with open_repository() as repo:
        repo.create_run("run-a", CONFIG, "h1", kind="generate")
        repo.create_run("run-b", CONFIG, "h2")
        repo.set_run_status("run-a", "failed", error="shard 3 failed: " + "x" * 200)
        repo.upsert_questions(questions_df(["q1", "q2"]))
        repo.record_routing_events(
            routing_df("run-a", ["q1", "q2"], decision="to_correction", correct_max=False),
            artifact_key="k1",
        )
        repo.record_routing_events(
            routing_df("run-a", ["q1"], stage="stage2", decision="unresolved")
        )
        repo.record_routing_events(routing_df("run-b", ["q1"], decision="pair"))
    return sphere_home


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_runs_in_all_formats(filled, capsys):
    code, out, _ = run_cli(capsys, "runs", "--format", "json")
    assert code == 0
    runs = json.loads(out)
    assert [r["run_id"] for r in runs] == ["run-b", "run-a"]
    assert runs[1]["status"] == "failed" and runs[1]["error"].startswith("shard 3 failed")
    code, out, _ = run_cli(capsys, "runs", "--format", "csv", "--limit", "1")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["run_id"] for r in rows] == ["run-b"]
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and "run-a" in out and "failed" in out and "generate" in out
    assert "x" * 100 not in out.replace("\n", "").replace("│", "").replace(" ", "")  # truncated


def test_routes_by_question_is_history_across_runs(filled, capsys):
    code, out, err = run_cli(capsys, "routes", "--question", "q1", "--format", "json")
    assert code == 0 and err == ""
    events = json.loads(out)
    assert [(e["run_id"], e["stage"], e["decision"]) for e in events] == [
        ("run-a", "stage1", "to_correction"),
        ("run-a", "stage2", "unresolved"),
        ("run-b", "stage1", "pair"),
    ]
    assert all(e["question_id"] == "q1" and e["reason"] for e in events)
    code, out, _ = run_cli(capsys, "routes", "-q", "q1", "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["decision"] for r in rows] == ["to_correction", "unresolved", "pair"]
    assert rows[0]["reward_max"] == "0.9" and rows[0]["correct_max"] == "False"
    code, out, _ = run_cli(capsys, "routes", "-q", "q1")
    assert code == 0 and "to_correction" in out and "unresolved" in out and "run-b" in out


def test_routes_by_run(filled, capsys):
    code, out, _ = run_cli(capsys, "routes", "--run", "run-a", "--format", "json")
    events = json.loads(out)
    assert code == 0 and len(events) == 3 and {e["run_id"] for e in events} == {"run-a"}
    assert {e["artifact_key"] for e in events if e["stage"] == "stage1"} == {"k1"}
    code, out, _ = run_cli(capsys, "routes", "--run", "run-a")
    assert code == 0 and "q2" in out and "0.90/0.10" in out and "Y/N" in out


def test_routes_argument_errors(filled, capsys):
    for argv in (["routes"], ["routes", "--run", "run-a", "--question", "q1"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and "exactly one of --run ID or --question QID" in err and out == ""
    code, out, err = run_cli(capsys, "routes", "--run", "ghost")
    assert (
        code == 1
        and err.strip().startswith("error: unknown run 'ghost'")
        and len(err.strip().splitlines()) == 1
    )
    code, _, err = run_cli(capsys, "routes", "--question", "ghost")
    assert code == 1 and "unknown question 'ghost'" in err
    code, _, err = run_cli(capsys, "runs", "--format", "xml")
    assert code == 2 and "--format must be one of" in err


def test_db_commands_hide_password_and_report_revision(sphere_home, capsys, monkeypatch):
    code, out, _ = run_cli(capsys, "db", "current")
    assert code == 0 and "none (not migrated)" in out and str(sphere_home / "sphere.db") in out
    code, out, _ = run_cli(capsys, "db", "upgrade")
    assert code == 0 and "at revision 0002 (head)" in out
    code, out, _ = run_cli(capsys, "db", "current")
    assert code == 0 and "revision: 0002 (head 0002, up to date)" in out
    monkeypatch.setenv("SPHERE_DATABASE_URL", "postgresql+psycopg://me:hunter2@127.0.0.1:1/x")
    code, out, err = run_cli(capsys, "runs")
    assert (
        code != 0 and "cannot connect to database postgresql+psycopg://me:***@127.0.0.1:1/x" in err
    )
    assert "hunter2" not in err + out


def test_rounds_in_runs_and_routes(sphere_home, capsys):
    with open_repository() as repo:
        repo.create_run("evo", CONFIG, "h", rounds=3)
        repo.set_run_round("evo", 2)
        repo.set_run_status("evo", "cancelled", error="Terminated: terminated by SIGTERM")
        repo.record_routing_events(routing_df("evo", ["q1"], decision="to_correction"))
        repo.record_routing_events(routing_df("evo", ["q1"], decision="pair"), round=2)
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and "2/3" in out and "cancelled" in out and "round" in out
    code, out, _ = run_cli(capsys, "runs", "--format", "json")
    (run,) = json.loads(out)
    assert (run["round"], run["rounds"], run["status"]) == (2, 3, "cancelled") and run[
        "finished_at"
    ]
    code, out, _ = run_cli(capsys, "routes", "--question", "q1", "--format", "json")
    assert code == 0 and [(e["round"], e["decision"]) for e in json.loads(out)] == [
        (1, "to_correction"),
        (2, "pair"),
    ]
    code, out, _ = run_cli(capsys, "routes", "--question", "q1")
    header = next(line for line in out.splitlines() if "stage" in line and "decision" in line)
    assert code == 0 and "round" in header
    code, out, _ = run_cli(capsys, "routes", "--run", "evo", "--round", "2", "--format", "json")
    assert code == 0 and [e["decision"] for e in json.loads(out)] == ["pair"]
    code, _, err = run_cli(capsys, "routes", "--question", "q1", "--round", "2")
    assert code == 2 and "--round goes with --run ID" in err
