"""One DPO run on embedded-small (three steps, an eval split, save_merged), checked for what
later stages rely on: a progress event per logging step, a train log with TRL's reward keys,
and a merged model dir that serves as the next round's policy and DPO reference."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from sphere_core.progress import LOGGER_NAME, fields_of
from sphere_core.training.dpo import train_dpo
from tests.unit.test_dpo import make_pairs, quick_cfg

pytestmark = pytest.mark.slow

REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def home(tmp_path_factory, session_models_dir) -> Path:
    home = tmp_path_factory.mktemp("dpo_rounds") / "home"
    home.mkdir()
    (home / "models").symlink_to(session_models_dir, target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def trained(home):
    """Three DPO steps with an eval split and save_merged; returns (result, progress records)."""
    work = home.parent
    make_pairs(4).to_parquet(work / "train.parquet")
    make_pairs(2).to_parquet(work / "eval.parquet")
    cfg = quick_cfg(
        **{
            "training.max_steps": "3",
            "training.per_device_batch_size": "2",
            "training.eval_steps": "2",
            "training.save_merged": "true",
        }
    )
    handler = _Collect()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        result = train_dpo(cfg, work / "train.parquet", work / "eval.parquet", work / "model", home)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return result, handler.records


def test_every_logging_step_emits_a_progress_event(trained):
    result, records = trained
    steps = [fields_of(r) for r in records if fields_of(r).get("kind") == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all(s["total"] == 3 and s["stage"] == "dpo" for s in steps)
    history = {h["step"]: h for h in result.log_history if "loss" in h}
    for s, record in zip(steps, [r for r in records if fields_of(r).get("kind") == "step"]):
        assert s["loss"] == pytest.approx(history[s["step"]]["loss"])
        assert s["margin"] == pytest.approx(history[s["step"]]["rewards/margins"])
        assert record.getMessage().startswith(
            f"dpo step {s['step']}/3: loss {s['loss']:.4f}, margin "
        )
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=0.02)  # policy == reference at step 1
    elapsed = [s["elapsed_s"] for s in steps]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    infos = [fields_of(r) for r in records if fields_of(r).get("kind") == "info"]
    assert any("eval_loss" in f for f in infos)  # the evaluation at step 2


def test_train_log_keeps_per_step_loss_and_rewards(trained):
    result, _ = trained
    logged = json.loads((result.adapter_dir.parent / "train_log.json").read_text())
    steps = [h for h in logged["log_history"] if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3]
    for h in steps:
        assert all(isinstance(h[k], float) for k in REWARD_KEYS)
        assert h["rewards/margins"] == pytest.approx(
            h["rewards/chosen"] - h["rewards/rejected"], abs=1e-5
        )
    evals = [h for h in logged["log_history"] if "eval_loss" in h]
    assert evals and all(f"eval_{k}" in evals[0] for k in REWARD_KEYS)
    metrics = logged["metrics"]
    assert metrics["global_step"] == 3 and metrics["threads"] >= 1 and metrics["s_per_step"] > 0
    assert metrics["n_truncated"] == 0 and 0 < metrics["max_pair_tokens"] <= 128


def test_next_round_trains_from_the_merged_dir_as_policy_and_reference(trained, home):
    result, _ = trained
    work = home.parent
    cfg = quick_cfg(**{"training.max_steps": "1", "models.policy.path": str(result.merged_dir)})
    nxt = train_dpo(cfg, work / "train.parquet", None, work / "round2", home)
    first = next(h for h in nxt.log_history if "loss" in h)
    # the reference is the merged policy itself: no reward gap before the first update
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-4)
    config = json.loads((nxt.adapter_dir / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).resolve() == result.merged_dir.resolve()
