"""Self-evolution rounds in the metadata store (SQLite and PostgreSQL): planned/reached rounds,
the cancelled status, per-round routing events, pruning stale stages, pairs, checkpoints and
evaluations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sphere_core.errors import StoreError
from sphere_core.schemas import PAIR_COLUMNS
from tests.unit import test_store_fixtures as _fixtures
from tests.unit.test_store import CONFIG, questions_df, routing_df

database_url = _fixtures.database_url
repo = _fixtures.repo


def pairs_df(run_id: str, qids, split="train", **extra) -> pd.DataFrame:
    rows = []
    for i, q in enumerate(qids):
        row = {c: None for c in PAIR_COLUMNS}
        row.update(
            prompt=[{"role": "user", "content": f"{q}?"}],
            chosen=[{"role": "assistant", "content": "42"}],
            rejected=[{"role": "assistant", "content": "41"}],
            question_id=q,
            stage="stage1",
            route="pair",
            granularity="answer",
            gold_answer="42",
            reward_chosen=0.9 - i / 100,
            reward_rejected=0.1,
            answer_chosen="42",
            answer_rejected="41",
            run_id=run_id,
            split=split,
        )
        row.update(extra)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*PAIR_COLUMNS, "split"])


def test_runs_plan_rounds_and_record_the_round_reached(repo):
    assert repo.create_run("single", CONFIG, "h")[("rounds")] == 1
    run = repo.create_run("evo", CONFIG, "h", rounds=3)
    assert (run["rounds"], run["round"]) == (3, 1)
    repo.set_run_round("evo", 2)
    assert repo.get_run("evo")["round"] == 2
    assert repo.create_run("evo", CONFIG, "h")["rounds"] == 3  # resume without rounds: kept
    assert repo.create_run("evo", CONFIG, "h", rounds=4)["rounds"] == 4
    assert {r["run_id"]: (r["round"], r["rounds"]) for r in repo.list_runs()} == {
        "single": (1, 1),
        "evo": (2, 4),
    }
    with pytest.raises(StoreError, match="plans 4 round"):
        repo.set_run_round("evo", 5)
    for bad in (0, -1, "2", True, 1.5):
        with pytest.raises(StoreError, match="invalid round"):
            repo.set_run_round("evo", bad)
    with pytest.raises(StoreError, match="unknown run 'ghost'"):
        repo.set_run_round("ghost", 1)
    with pytest.raises(StoreError, match="invalid rounds 0"):
        repo.create_run("zero", CONFIG, "h", rounds=0)


def test_update_run_config(repo):
    repo.create_run("r1", CONFIG, "h", rounds=2)
    changed = {**CONFIG, "evolution": {"rounds": 3}}
    run = repo.update_run_config("r1", changed, "h2", rounds=3)
    assert (run["config"], run["config_hash"], run["rounds"]) == (changed, "h2", 3)
    assert repo.update_run_config("r1", changed, "h2")["rounds"] == 3
    with pytest.raises(StoreError, match="unknown run 'ghost'"):
        repo.update_run_config("ghost", CONFIG, "h")


def test_cancelled_run_is_finished_and_resumable(repo):
    repo.create_run("r1", CONFIG, "h")
    repo.set_run_status("r1", "running")
    repo.set_run_status("r1", "cancelled", error="Terminated: terminated by SIGTERM")
    run = repo.get_run("r1")
    assert run["status"] == "cancelled" and run["finished_at"] is not None
    repo.set_run_status("r1", "running")  # resumed
    assert repo.get_run("r1")["finished_at"] is None


def test_routing_events_per_round(repo):
    repo.create_run("r1", CONFIG, "h", rounds=2)
    repo.upsert_questions(questions_df(["q1", "q2"]))
    assert (
        repo.record_routing_events(routing_df("r1", ["q1", "q2"]), artifact_key="a1") == 2
    )  # round 1
    assert (
        repo.record_routing_events(
            routing_df("r1", ["q1"], decision="no_error"), artifact_key="a2", round=2
        )
        == 1
    )
    repo.record_routing_events(
        routing_df("r1", ["q1"], decision="no_error"), artifact_key="a2", round=2
    )  # retry
    every = repo.routes_for_run("r1")
    assert [(e["round"], e["question_id"], e["decision"]) for e in every] == [
        (1, "q1", "pair"),
        (1, "q2", "pair"),
        (2, "q1", "no_error"),
    ]
    assert [e["question_id"] for e in repo.routes_for_run("r1", round=2)] == ["q1"]
    assert [e["question_id"] for e in repo.routes_for_run("r1", round=np.int64(1))] == ["q1", "q2"]
    history = repo.routes_for_question("q1")
    assert [(h["run_id"], h["round"], h["decision"]) for h in history] == [
        ("r1", 1, "pair"),
        ("r1", 2, "no_error"),
    ]
    with pytest.raises(StoreError, match=r"round column has \[1\]; recording round 2"):
        repo.record_routing_events(routing_df("r1", ["q1"]).assign(round=1), round=2)


def test_prune_drops_stale_stages_of_one_round_only(repo):
    repo.create_run("r1", CONFIG, "h", rounds=2)
    repo.create_run("other", CONFIG, "h")
    for rnd in (1, 2):
        for stage, key in (("stage1", "k1"), ("stage2", "k2"), ("stage3", "k3")):
            repo.record_routing_events(
                routing_df("r1", ["q1", "q2"], stage=stage), artifact_key=key, round=rnd
            )
    repo.record_routing_events(
        routing_df("r1", ["q3"], stage="stage1"), artifact_key=None
    )  # no key recorded
    repo.record_routing_events(routing_df("other", ["q1"], stage="stage2"), artifact_key="k2")
    # round 1 re-run: stage2 dropped from the config, stage3 recomputed under a new key
    assert repo.prune_routing_events("r1", 1, keep={"stage1": "k1", "stage3": "k3-new"}) == 5
    left = {(e["stage"], e["question_id"]) for e in repo.routes_for_run("r1", round=1)}
    assert left == {("stage1", "q1"), ("stage1", "q2")}
    assert len(repo.routes_for_run("r1", round=2)) == 6 and len(repo.routes_for_run("other")) == 1
    assert repo.prune_routing_events("r1", 1, keep={"stage1": "k1"}) == 0  # idempotent
    assert repo.prune_routing_events("r1", 2, keep={}) == 6
    assert repo.routes_for_run("r1", round=2) == []


def test_pairs_are_replaced_per_run_and_round(repo):
    repo.create_run("r1", CONFIG, "h", rounds=2)
    df = pd.concat(
        [pairs_df("r1", ["q1", "q1", "q2"]), pairs_df("r1", ["q3"], split="eval")],
        ignore_index=True,
    )
    assert repo.record_pairs("r1", 1, df, artifact_key="p1") == 4
    assert repo.record_pairs("r1", 1, df, artifact_key="p1") == 4  # a retry: no duplicates
    pairs = repo.pairs_for_run("r1")
    assert [(p["ordinal"], p["question_id"], p["split"]) for p in pairs] == [
        (0, "q1", "train"),
        (1, "q1", "train"),
        (2, "q2", "train"),
        (3, "q3", "eval"),
    ]
    first = pairs[0]
    assert (
        first["round"],
        first["stage"],
        first["route"],
        first["granularity"],
        first["artifact_key"],
    ) == (1, "stage1", "pair", "answer", "p1")
    assert first["reward_chosen"] == pytest.approx(0.9) and first["answer_rejected"] == "41"
    assert repo.get_question("q3") is not None  # placeholder for a question not yet upserted
    assert repo.record_pairs("r1", 2, pairs_df("r1", ["q9"]), artifact_key="p2") == 1
    assert repo.record_pairs("r1", 1, df.iloc[:1], artifact_key="p1b") == 1  # replaced, not merged
    assert [
        (p["round"], p["question_id"], p["artifact_key"]) for p in repo.pairs_for_run("r1")
    ] == [(1, "q1", "p1b"), (2, "q9", "p2")]
    assert [p["question_id"] for p in repo.pairs_for_run("r1", round=2)] == ["q9"]
    assert repo.record_pairs("r1", 2, pairs_df("r1", [])) == 0
    assert repo.pairs_for_run("r1", round=2) == []


def test_bad_pairs_change_nothing(repo):
    repo.create_run("r1", CONFIG, "h")
    repo.record_pairs("r1", 1, pairs_df("r1", ["q1"]))
    with pytest.raises(StoreError, match=r"row 1 has split 'test'"):
        repo.record_pairs(
            "r1", 1, pd.concat([pairs_df("r1", ["q2"]), pairs_df("r1", ["q3"], split="test")])
        )
    with pytest.raises(StoreError, match=r"row 0 belongs to run 'r2', not 'r1'"):
        repo.record_pairs("r1", 1, pairs_df("r2", ["q2"]))
    with pytest.raises(StoreError, match=r"missing column\(s\) \['split'\]"):
        repo.record_pairs("r1", 1, pairs_df("r1", ["q2"]).drop(columns="split"))
    with pytest.raises(StoreError, match="unknown run 'ghost'"):
        repo.record_pairs("ghost", 1, pairs_df("ghost", ["q2"]))
    assert [p["question_id"] for p in repo.pairs_for_run("r1")] == ["q1"]


def test_checkpoints_and_evaluations_per_round(repo):
    repo.create_run("r1", CONFIG, "h", rounds=2)
    repo.record_checkpoint("r1", "/ckpt/adapter", "adapter", {"loss": 0.5})
    repo.record_checkpoint("r1", "/ckpt/adapter", "adapter", {"loss": 0.3}, round=2)
    repo.record_checkpoint("r1", "/ckpt/adapter", "adapter", {"loss": 0.2}, round=2)  # upsert
    assert [(c["round"], c["metrics"]) for c in repo.checkpoints_for_run("r1")] == [
        (1, {"loss": 0.5}),
        (2, {"loss": 0.2}),
    ]
    assert len(repo.checkpoints_for_run("r1", round=1)) == 1
    for rnd, value in ((1, 0.25), (2, 0.5), (2, 0.625)):
        repo.record_evaluation("r1", "trained", "gsm8k", "pass@1", value, 8, round=rnd)
    repo.record_evaluation("r1", "base", "gsm8k", "pass@1", 0.25, 8)
    assert [(e["round"], e["model_label"], e["value"]) for e in repo.evaluations_for_run("r1")] == [
        (1, "base", 0.25),
        (1, "trained", 0.25),
        (2, "trained", 0.625),
    ]
    assert [e["value"] for e in repo.evaluations_for_run("r1", round=2)] == [0.625]
