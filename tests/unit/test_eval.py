"""Evaluation: flip counting and scores on constructed records (pure), and a real run on the
embedded model whose per-item verdicts must match re-grading the same outputs."""

from __future__ import annotations

import pandas as pd
import pytest

from sphere_core.config import resolve_config
from sphere_core.evaluation.metrics import flips, score_items, summary_rows
from sphere_core.evaluation.report import build_report  # noqa: F401  (import smoke)


def _items(c1, c2):
    return pd.DataFrame(
        {"question_id": [f"q{i}" for i in range(len(c1))], "correct_1": c1, "correct_2": c2}
    )


def test_flips_and_scores_on_constructed_records():
    items = _items([True, True, False, False, True, False], [True, False, True, False, False, True])
    assert flips(items["correct_1"], items["correct_2"]) == (2, 2)
    scores = score_items(items)
    assert scores["pass@1"] == pytest.approx(3 / 6)
    assert scores["self_correction_acc"] == pytest.approx(3 / 6)
    assert (scores["flips_r2w"], scores["flips_w2r"]) == (2, 2)

    items = _items([False, False, False, True], [True, True, False, True])
    scores = score_items(items)
    assert scores["pass@1"] == 0.25 and scores["self_correction_acc"] == 0.75
    assert (scores["flips_r2w"], scores["flips_w2r"]) == (0, 2)


def test_scores_without_second_turn_and_empty():
    items = _items([True, False], [None, None])
    scores = score_items(items)
    assert (
        scores["pass@1"] == 0.5
        and scores["self_correction_acc"] is None
        and scores["flips_r2w"] is None
    )
    rows = summary_rows("base", "gsm8k", items)
    assert rows["metric"].tolist() == ["pass@1"] and rows["n"].tolist() == [2]
    assert score_items(_items([], []))["pass@1"] is None


def _random_adapter(model_dir, out_dir):
    """A LoRA adapter with non-zero weights (so it changes the model) saved like training does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = get_peft_model(
        model,
        LoraConfig(
            r=4,
            lora_alpha=64,
            target_modules="all-linear",
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
    )
    peft.save_pretrained(out_dir)
    return out_dir


@pytest.mark.slow
def test_evaluate_records_match_regrading_and_adapter_changes_outputs(sphere_home, tmp_path):
    from sphere_core.backends.embedded import resolve_model_path
    from sphere_core.evaluation.runner import evaluate
    from sphere_core.grading import get_grader

    cfg = resolve_config(
        overrides=[
            "evaluation.max_new_tokens=48",
            "evaluation.greedy=true",
            "models.policy.device=cpu",
            "models.policy.path=embedded-small",
        ]
    )
    out = tmp_path / "eval"
    items, summary = evaluate(
        cfg, "base", "embedded-small", None, ["gsm8k"], 2, home=sphere_home, out_dir=out
    )

    assert len(items) == 2 and set(items["benchmark"]) == {"gsm8k"}
    saved = pd.read_parquet(out / "base" / "gsm8k.parquet")
    for col in (
        "question_id",
        "problem",
        "gold",
        "response_1",
        "extracted_1",
        "correct_1",
        "response_2",
        "extracted_2",
        "correct_2",
    ):
        assert col in saved.columns, col
    assert saved["response_1"].str.len().gt(0).all()

    grader = get_grader(cfg.grading)
    regraded_1 = grader.grade_texts(saved["response_1"].tolist(), saved["gold"].tolist())
    assert [c for _, c in regraded_1] == saved["correct_1"].tolist()
    assert [e for e, _ in regraded_1] == saved["extracted_1"].tolist()
    turn2 = saved[saved["response_2"].notna()]
    regraded_2 = grader.grade_texts(turn2["response_2"].tolist(), turn2["gold"].tolist())
    assert [c for _, c in regraded_2] == turn2["correct_2"].tolist()

    metrics = dict(zip(summary["metric"], summary["value"]))
    assert metrics["pass@1"] == pytest.approx(saved["correct_1"].mean())
    assert metrics["self_correction_acc"] == pytest.approx(saved["correct_2"].astype(bool).mean())
    r2w, w2r = flips(saved["correct_1"], saved["correct_2"])
    assert (metrics["flips_r2w"], metrics["flips_w2r"]) == (r2w, w2r)

    adapter = _random_adapter(
        resolve_model_path("embedded-small", sphere_home), tmp_path / "adapter"
    )
    cfg1 = cfg.model_copy(
        update={"evaluation": cfg.evaluation.model_copy(update={"self_correction": False})}
    )
    trained, _ = evaluate(
        cfg1, "trained", "embedded-small", adapter, ["gsm8k"], 2, home=sphere_home
    )
    assert trained["response_2"].isna().all()
    assert (
        trained["response_1"].tolist() != items["response_1"].tolist()
    )  # the adapter was merged in
