"""The generate flow on the fakes: the typed result, the run view, disabled stages, the summary
table, a re-run with a changed config (stale stages leave the view and the store), and an empty
pairs file that pyarrow/pandas/TRL read as 0 rows."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console

from flows.generate import generate_flow
from sphere_core.backends.cache import clear_caches
from sphere_core.storage.repo import open_repository
from sphere_core.storage.run_view import RunView
from sphere_core.summary import summary_table
from tests.fakes import SCENARIOS, write_fake_questions
from tests.flows.orch_fakes import fake_overrides


@pytest.fixture(autouse=True)
def _fresh_backends(sphere_home):
    clear_caches()
    yield
    clear_caches()


def test_generate_result_and_view(prefect_api, tmp_path, sphere_home):
    data = write_fake_questions(tmp_path / "q.jsonl", SCENARIOS)
    result = generate_flow(
        run_id="run1", overrides=fake_overrides(data) + ["pairs.eval_fraction=0.3"]
    )
    out = sphere_home / "runs" / "run1"
    for rel in ("outputs.json", "pairs/train.parquet", "pairs/eval.parquet"):
        assert (out / rel).is_file(), rel
    view = RunView(sphere_home, "run1")
    assert view.record["run_id"] == "run1" and view.stages() == ["stage1", "stage2", "stage3"]
    assert result.questions == len(SCENARIOS) == len(view.questions())
    counts = {(c["stage"], c["decision"]): c["questions"] for c in result.routing_counts}
    assert counts[("stage1", "to_correction")] == 3  # corrected, unresolved, noanswer
    assert {d: n for (s, d), n in counts.items() if s == "stage2"} == {"pair": 1, "unresolved": 2}
    assert {d: n for (s, d), n in counts.items() if s == "stage3"} == {"pair": 1, "no_error": 1}
    pairs = view.pairs()
    assert pairs["stage"].value_counts().to_dict() == {"stage1": 2, "stage2": 1, "stage3": 1}
    assert result.pairs_train + result.pairs_eval == 4 and result.pairs_eval >= 1
    assert result.search["generate_calls"] > 0 and result.elapsed_s > 0
    assert len(view.routing("stage1")) == len(SCENARIOS)
    assert view.summary()["pairs_train"] == result.pairs_train


def test_disabled_stages_keep_their_decisions(prefect_api, tmp_path, sphere_home):
    data = write_fake_questions(tmp_path / "q.jsonl", ["corrected", "diverse", "contrastive"])
    result = generate_flow(
        run_id="only1", overrides=fake_overrides(data) + ["routing.stages=[stage1]"]
    )
    counts = {(c["stage"], c["decision"]): c["questions"] for c in result.routing_counts}
    assert counts == {
        ("stage1", "to_correction"): 1,
        ("stage1", "to_diversity"): 1,
        ("stage1", "pair"): 1,
    }
    assert RunView(sphere_home, "only1").stages() == ["stage1"]
    assert result.pairs == 1 and result.warnings == []


def test_summary_table_renders_counts(prefect_api, tmp_path, sphere_home):
    data = write_fake_questions(tmp_path / "q.jsonl", SCENARIOS)
    generate_flow(run_id="t", overrides=fake_overrides(data))
    view = RunView(sphere_home, "t")
    console = Console(record=True, width=160)
    console.print(summary_table(view.routing(), view.pairs()))
    text = console.export_text()
    assert (
        "Stage 2 (self-correction)" in text and "unresolved 2" in text and "to_correction 3" in text
    )


def test_rerun_with_fewer_stages_prunes_the_view_and_the_store(prefect_api, tmp_path, sphere_home):
    data = write_fake_questions(tmp_path / "q.jsonl", SCENARIOS)
    generate_flow(run_id="again", overrides=fake_overrides(data))
    with open_repository(None, sphere_home) as repo:
        assert {e["stage"] for e in repo.routes_for_run("again")} == {"stage1", "stage2", "stage3"}
    generate_flow(
        run_id="again", overrides=fake_overrides(data) + ["routing.stages=[stage1, stage3]"]
    )
    view = RunView(sphere_home, "again")
    assert view.stages() == ["stage1", "stage3"] and "stage2" not in set(view.routing()["stage"])
    assert "stage2" not in set(view.pairs()["stage"])
    with open_repository(None, sphere_home) as repo:
        assert {e["stage"] for e in repo.routes_for_run("again")} == {"stage1", "stage3"}
        assert "stage2" not in {p["stage"] for p in repo.pairs_for_run("again")}
        assert repo.get_run("again")["config"]["routing"]["stages"] == ["stage1", "stage3"]


def test_zero_pairs_write_typed_empty_files(prefect_api, tmp_path, sphere_home):
    data = write_fake_questions(tmp_path / "q.jsonl", ["unresolved", "no_error"])
    result = generate_flow(run_id="none", overrides=fake_overrides(data))
    assert result.pairs == 0
    view = RunView(sphere_home, "none")
    for split in ("train", "eval"):
        import pyarrow.parquet as pq

        table = pq.read_table(view.pairs_path(split))
        assert table.num_rows == 0 and str(table.schema.field("prompt").type).startswith("list<")
        assert pd.read_parquet(view.pairs_path(split)).empty
    from sphere_core.training.dpo import load_pairs

    assert len(load_pairs(view.pairs_path("train"))) == 0
    import datasets

    streamed = datasets.load_dataset(
        "parquet", data_files={"train": str(view.pairs_path("train"))}, streaming=True
    )["train"]
    assert sum(1 for _ in streamed) == 0 and list(streamed.features)[:3] == [
        "prompt",
        "chosen",
        "rejected",
    ]
