"""generate_run end to end on the fakes: files, summary, disabled stages, the summary table."""

from __future__ import annotations

import json

import pandas as pd
from rich.console import Console

from sphere_core.generate import generate_run, summary_table
from tests.fakes import SCENARIOS, fake_config, write_fake_questions


def test_generate_run_writes_every_artifact(tmp_path, sphere_home):
    data = write_fake_questions(tmp_path / "q.jsonl", SCENARIOS)
    cfg = fake_config(f"data.path={data}", "pairs.eval_fraction=0.3")
    msgs: list[str] = []
    summary = generate_run(cfg, run_id="run1", home=sphere_home, progress=msgs.append)
    out = sphere_home / "runs" / "run1"
    for rel in ("questions.parquet", "rejects.parquet", "pairs/train.parquet", "pairs/eval.parquet",
                "summary.json", *(f"{k}/stage{i}.parquet" for k in ("tree", "routing") for i in (1, 2, 3))):
        assert (out / rel).is_file(), rel
    assert json.loads((out / "summary.json").read_text())["run_id"] == "run1"
    assert summary["questions"] == len(SCENARIOS)
    assert summary["stages"]["stage1"]["questions"] == len(SCENARIOS)
    assert summary["stages"]["stage1"]["to_correction"] == 3  # corrected, unresolved, noanswer
    assert summary["stages"]["stage2"] == {"questions": 3, "pair": 1, "unresolved": 2}
    assert summary["stages"]["stage3"] == {"questions": 2, "pair": 1, "no_error": 1}
    assert summary["pairs"]["by_stage"] == {"stage1": 2, "stage2": 1, "stage3": 1}
    assert summary["pairs_train"] + summary["pairs_eval"] == 4 and summary["pairs_eval"] >= 1
    assert summary["search"]["generate_calls"] > 0 and any("stage1" in m for m in msgs)
    routing = pd.read_parquet(out / "routing" / "stage1.parquet")
    assert len(routing) == len(SCENARIOS)


def test_disabled_stages_keep_their_decisions(tmp_path, sphere_home):
    data = write_fake_questions(tmp_path / "q.jsonl", ["corrected", "diverse", "contrastive"])
    cfg = fake_config(f"data.path={data}", "routing.stages=[stage1]")
    summary = generate_run(cfg, run_id="only1", home=sphere_home)
    assert summary["stages"]["stage1"]["to_correction"] == 1
    assert summary["stages"]["stage1"]["to_diversity"] == 1
    assert summary["stages"]["stage2"]["questions"] == 0 and summary["stages"]["stage3"]["questions"] == 0
    assert summary["stages_run"] == ["stage1"] and summary["pairs"]["total"] == 1
    assert summary["warnings"] == []


def test_summary_table_renders_counts(tmp_path, sphere_home):
    data = write_fake_questions(tmp_path / "q.jsonl", SCENARIOS)
    generate_run(fake_config(f"data.path={data}"), run_id="t", home=sphere_home)
    out = sphere_home / "runs" / "t"
    routing = pd.concat([pd.read_parquet(out / "routing" / f"stage{i}.parquet") for i in (1, 2, 3)])
    pairs = pd.concat([pd.read_parquet(out / "pairs" / f"{s}.parquet") for s in ("train", "eval")])
    console = Console(record=True, width=160)
    console.print(summary_table(routing, pairs))
    text = console.export_text()
    assert "Stage 2 (self-correction)" in text and "unresolved 2" in text and "to_correction 3" in text
