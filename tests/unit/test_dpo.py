"""DPO training on the embedded model: a few steps must move the LoRA weights and lower the
DPO loss on the training pairs; empty pair files are a clear TrainingError."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sphere_core.backends.cpu_features import cpu_has_native_bf16
from sphere_core.config import resolve_config
from sphere_core.errors import TrainingError
from sphere_core.schemas import PAIR_COLUMNS
from sphere_core.training.dpo import load_pairs, train_dpo

SYSTEM = "You are a math expert. Solve the problem step by step."
PROBLEMS = [
    ("What is 2 + 3?", "5", "6"),
    ("What is 4 times 3?", "12", "7"),
    ("What is 10 minus 4?", "6", "14"),
    ("What is 9 divided by 3?", "3", "27"),
]


def make_pairs(n: int = 4, granularity: str = "trajectory") -> pd.DataFrame:
    rows = []
    for i in range(n):
        problem, good, bad = PROBLEMS[i % len(PROBLEMS)]
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": problem},
                ],
                "chosen": [
                    {"role": "assistant", "content": f"Final Answer: The final answer is ${good}$."}
                ],
                "rejected": [
                    {"role": "assistant", "content": f"Final Answer: The final answer is ${bad}$."}
                ],
                "question_id": f"q{i}",
                "stage": "stage1",
                "route": "pair",
                "granularity": granularity,
                "gold_answer": good,
                "reward_chosen": 0.9,
                "reward_rejected": 0.1,
                "answer_chosen": good,
                "answer_rejected": bad,
                "run_id": "r1",
            }
        )
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def quick_cfg(**extra: str):
    overrides = [
        "training.learning_rate=5e-4",
        "training.warmup_ratio=0.0",
        "training.lora_r=8",
        "training.lora_alpha=16",
        "training.lora_dropout=0.0",
        "training.max_steps=4",
        "training.per_device_batch_size=2",
        "training.max_length=128",
        "training.beta=0.1",
        "models.policy.device=cpu",
        "models.policy.path=embedded-small",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return resolve_config(overrides=overrides)


def test_load_pairs_keeps_only_trl_columns_and_filters_granularity(tmp_path):
    df = pd.concat([make_pairs(3), make_pairs(2, granularity="step")])
    path = tmp_path / "train.parquet"
    df.to_parquet(path)
    ds = load_pairs(path)
    assert ds.column_names == ["prompt", "chosen", "rejected"] and len(ds) == 5
    assert ds[0]["prompt"][1] == {"role": "user", "content": PROBLEMS[0][0]}
    assert len(load_pairs(path, granularities=["trajectory"])) == 3
    assert load_pairs(tmp_path / "missing.parquet") is None


def test_missing_trl_column_names_the_file(tmp_path):
    path = tmp_path / "train.parquet"
    make_pairs(2).drop(columns=["rejected"]).to_parquet(path)
    with pytest.raises(TrainingError, match="train.parquet lacks column"):
        load_pairs(path)


def test_no_pairs_is_a_training_error(tmp_path, sphere_home):
    train = tmp_path / "train.parquet"
    make_pairs(0).to_parquet(train)
    with pytest.raises(TrainingError, match="no preference pairs"):
        train_dpo(quick_cfg(), train, None, tmp_path / "model", sphere_home)
    with pytest.raises(TrainingError, match="no preference pairs"):
        train_dpo(quick_cfg(), tmp_path / "absent.parquet", None, tmp_path / "model", sphere_home)


def _lora_state(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@pytest.mark.slow
def test_dpo_steps_change_lora_and_lower_loss(tmp_path, sphere_home):
    import torch

    train = tmp_path / "train.parquet"
    make_pairs(4).to_parquet(train)
    evalp = tmp_path / "eval.parquet"
    make_pairs(4).to_parquet(evalp)  # same pairs: eval loss measures fit on the training pairs
    result = train_dpo(
        quick_cfg(**{"training.eval_steps": "2"}), train, evalp, tmp_path / "model", sphere_home
    )

    # LoRA B matrices start at zero; after training they must not be all zero.
    state = _lora_state(result.adapter_dir)
    b_weights = [v for k, v in state.items() if "lora_B" in k]
    assert b_weights and any(torch.count_nonzero(w) > 0 for w in b_weights)
    targets = {k.split(".")[-3] for k in state if "lora_A" in k}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= targets

    evals = [h["eval_loss"] for h in result.log_history if "eval_loss" in h]
    train_losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert train_losses and train_losses[0] == pytest.approx(
        0.6931, abs=0.02
    )  # log(2) at the start
    assert evals and min(evals) < 0.6931 - 0.05
    assert result.metrics["best_eval_loss"] == pytest.approx(min(evals))
    assert result.best_checkpoint and Path(result.best_checkpoint).is_dir()
    logged = json.loads((tmp_path / "model" / "train_log.json").read_text())
    assert logged["log_history"] == json.loads(json.dumps(result.log_history, default=str))
    assert result.metrics["n_train"] == 4 and result.metrics["device"] == "cpu"
    assert result.metrics["bf16"] is cpu_has_native_bf16()  # training.bf16=auto on CPU


@pytest.mark.slow
def test_training_without_eval_split_warns_and_saves_merged(tmp_path, sphere_home, caplog):
    train = tmp_path / "train.parquet"
    make_pairs(2).to_parquet(train)
    cfg = quick_cfg(**{"training.max_steps": "1", "training.save_merged": "true"})
    with caplog.at_level("WARNING"):
        result = train_dpo(cfg, train, tmp_path / "eval.parquet", tmp_path / "model", sphere_home)
    assert "without an eval split" in caplog.text
    assert result.best_checkpoint is None and result.metrics["n_eval"] == 0
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.merged_dir / "config.json").is_file()
    assert not (result.merged_dir / "adapter_config.json").exists()
