"""The run report from synthetic run files: every section, valid PNGs, and graceful gaps."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sphere_core.config import load_config
from sphere_core.evaluation.report import build_report
from sphere_core.paths import run_dir
from sphere_core.schemas import PAIR_COLUMNS, ROUTING_COLUMNS
from sphere_core.storage.repo import open_repository

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _routing(run_id: str) -> dict[str, pd.DataFrame]:
    plan = {
        "stage1": ["pair"] * 3 + ["pair_inverted"] + ["to_correction"] * 4 + ["to_diversity"] * 2,
        "stage2": ["pair"] * 2 + ["unresolved"] * 2,
        "stage3": ["pair", "no_error"],
    }
    frames = {}
    for stage, decisions in plan.items():
        rows = [{c: None for c in ROUTING_COLUMNS} | {"run_id": run_id, "question_id": f"q{i}",
                                                       "stage": stage, "decision": d, "reason": "test"}
                for i, d in enumerate(decisions)]
        frames[stage] = pd.DataFrame(rows, columns=ROUTING_COLUMNS)
    return frames


def _pairs(run_id: str, stages: list[str]) -> pd.DataFrame:
    rows = []
    for i, stage in enumerate(stages):
        rows.append({
            "prompt": [{"role": "user", "content": f"p{i}"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
            "question_id": f"q{i}", "stage": stage, "route": "pair", "granularity": "trajectory",
            "gold_answer": "1", "reward_chosen": 0.8 + 0.01 * i, "reward_rejected": 0.2 + 0.02 * i,
            "answer_chosen": "1", "answer_rejected": "2", "run_id": run_id,
        })
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def _write_run(home, run_id: str, repo) -> None:
    run = run_dir(home, run_id)
    (run / "routing").mkdir(parents=True)
    for stage, df in _routing(run_id).items():
        df.to_parquet(run / "routing" / f"{stage}.parquet")
    (run / "pairs").mkdir()
    _pairs(run_id, ["stage1"] * 4 + ["stage2"] * 2 + ["stage3"]).to_parquet(run / "pairs" / "train.parquet")
    _pairs(run_id, ["stage1"]).to_parquet(run / "pairs" / "eval.parquet")
    (run / "model").mkdir()
    history = [{"step": s, "loss": 0.69 - 0.05 * s, "epoch": s / 4} for s in range(1, 9)]
    history += [{"step": s, "eval_loss": 0.7 - 0.04 * s} for s in (2, 4, 6, 8)]
    (run / "model" / "train_log.json").write_text(json.dumps({
        "log_history": history, "best_checkpoint": str(run / "model/checkpoints/checkpoint-8"),
        "metrics": {"n_train": 7, "n_eval": 1, "best_eval_loss": 0.38, "train_loss": 0.5},
    }))
    for label, base in (("base", 0.25), ("trained", 0.5)):
        for bench in ("gsm8k", "math500"):
            repo.record_evaluation(run_id, label, bench, "pass@1", base, 4)
            repo.record_evaluation(run_id, label, bench, "self_correction_acc", base + 0.25, 4)
            repo.record_evaluation(run_id, label, bench, "flips_r2w", 0, 4)
            repo.record_evaluation(run_id, label, bench, "flips_w2r", 1, 4)


def test_full_report_has_every_section_and_valid_pngs(sphere_home):
    repo = open_repository(home=sphere_home)
    cfg = load_config(preset="demo")
    repo.create_run("r1", cfg.to_dict(), cfg.config_hash())
    _write_run(sphere_home, "r1", repo)

    path = build_report("r1", sphere_home, repo)
    text = path.read_text()
    assert path == run_dir(sphere_home, "r1") / "report.md"
    for heading in ("## Setup", "## Routing and preference pairs", "## Rewards of chosen vs rejected",
                    "## DPO training", "## Evaluation (base vs trained)"):
        assert heading in text, heading
    assert "π_small = π" in text and "embedded" in text
    assert "Total preference pairs: **8**" in text
    assert "| gsm8k | trained | 50 | 75 | 0 | 1 | 4 |" in text
    assert "checkpoint-8" in text
    pngs = {p.name for p in (run_dir(sphere_home, "r1") / "report").glob("*.png")}
    assert pngs == {"routing.png", "rewards.png", "loss.png", "accuracy.png"}
    for name in pngs:
        data = (run_dir(sphere_home, "r1") / "report" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        assert f"](report/{name})" in text


def test_report_of_an_empty_run_notes_the_missing_parts(sphere_home):
    repo = open_repository(home=sphere_home)
    cfg = load_config(overrides=["models.small.path=/models/small"])
    repo.create_run("r2", cfg.to_dict(), cfg.config_hash())
    text = build_report("r2", sphere_home, repo).read_text()
    assert "No routing records yet" in text
    assert "No preference pairs yet" in text
    assert "No training yet" in text
    assert "No evaluation recorded yet" in text
    assert "π_small = π" not in text and "/models/small" in text
    assert not list((run_dir(sphere_home, "r2") / "report").glob("*.png"))


def test_report_without_store_record(sphere_home):
    text = build_report("r3", sphere_home, None).read_text()
    assert "configuration is unknown" in text


@pytest.mark.parametrize("missing", ["train_log", "eval"])
def test_partial_runs(sphere_home, missing):
    repo = open_repository(home=sphere_home)
    cfg = load_config()
    repo.create_run("r4", cfg.to_dict(), cfg.config_hash())
    _write_run(sphere_home, "r4", repo)
    run = run_dir(sphere_home, "r4")
    if missing == "train_log":
        (run / "model" / "train_log.json").unlink()
    else:
        (run / "pairs" / "eval.parquet").unlink()
    text = build_report("r4", sphere_home, repo).read_text()
    assert ("No training yet" in text) == (missing == "train_log")
    assert "## Evaluation (base vs trained)" in text
