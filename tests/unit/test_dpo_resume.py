"""DPO resumes where it stopped: checkpoints every ``training.save_steps``, a re-run with the same
key continues from the newest complete checkpoint (same optimizer steps and data order as an
uninterrupted run), a half-written checkpoint or another key's is never taken, a SIGINT ends
the current step with a checkpoint, and one training per model dir runs at a time.

The training tests run the real tiny model (``embedded-small``) on CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from sphere_core import interrupts
from sphere_core.errors import TrainingError
from sphere_core.training import checkpoints
from sphere_core.training.claim import training_claim
from sphere_core.training.dpo import train_dpo
from tests.unit.test_dpo import make_pairs, quick_cfg

STEPS = 2


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not an Exception, so nothing catches it)."""


def _cfg(**extra: str):
    return quick_cfg(
        **{
            "training.max_steps": str(STEPS),
            "training.save_steps": "1",
            "training.per_device_batch_size": "1",
            "training.max_length": "64",
            "training.lora_r": "4",
            "training.lora_alpha": "8",
            "training.save_total_limit": "2",
            **extra,
        }
    )


def _pairs(tmp_path: Path) -> Path:
    path = tmp_path / "train.parquet"
    make_pairs(2).to_parquet(path)  # 2 one-pair steps per epoch: STEPS stay within the first epoch
    return path


def _steps(history: list[dict]) -> list[tuple[int, float, float]]:
    """(step, loss, chosen reward) of each training record: the data order shows in both."""
    return [(h["step"], h["loss"], h["rewards/chosen"]) for h in history if "loss" in h]


@pytest.fixture(autouse=True)
def _no_stop_left_over():
    interrupts.reset()
    yield
    interrupts.reset()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # three short trainings; minutes on a loaded 2-core machine
def test_a_killed_training_resumes_at_the_next_step_with_the_same_result(
    tmp_path, sphere_home, monkeypatch, caplog
):
    train = _pairs(tmp_path)
    whole = train_dpo(_cfg(), train, None, tmp_path / "whole", sphere_home, key="k1")
    assert whole.metrics["global_step"] == STEPS and whole.metrics["resumed_from_step"] is None

    kill_after = 1
    real_marker = checkpoints.write_marker

    def marker_then_die(path, key, step):
        real_marker(path, key, step)
        if step == kill_after:
            raise Killed

    monkeypatch.setattr(checkpoints, "write_marker", marker_then_die)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train_dpo(_cfg(), train, None, out, sphere_home, key="k1")
    monkeypatch.setattr(checkpoints, "write_marker", real_marker)
    ckpts = out / "checkpoints"
    assert checkpoints.problem(ckpts / f"checkpoint-{kill_after}", "k1") is None
    assert not (out / "adapter").exists()
    # a kill in the middle of the next save: the directory exists without the optimizer state
    torn = ckpts / f"checkpoint-{kill_after + 1}"
    shutil.copytree(ckpts / f"checkpoint-{kill_after}", torn)
    (torn / "optimizer.pt").unlink()
    (torn / checkpoints.MARKER).unlink()

    caplog.clear()
    with caplog.at_level("INFO", logger="sphere.progress"):
        resumed = train_dpo(_cfg(), train, None, out, sphere_home, key="k1")
    events = [r.getMessage() for r in caplog.records if r.name == "sphere.progress"]
    assert any(f"resuming from step {kill_after}" in e for e in events), events
    removed = [r.getMessage() for r in caplog.records if "is not resumed" in r.getMessage()]
    assert removed and str(torn) in removed[0]  # the torn checkpoint was removed, never taken
    assert checkpoints.problem(torn, "k1") is None  # step k+1 was trained again and saved whole
    first_new = next(e for e in events if e.startswith("dpo step"))
    assert first_new.startswith(f"dpo step {kill_after + 1}/{STEPS}")
    assert resumed.metrics["global_step"] == STEPS
    assert resumed.metrics["resumed_from_step"] == kill_after
    got, want = _steps(resumed.log_history), _steps(whole.log_history)
    assert [s for s, _, _ in got] == [s for s, _, _ in want] == list(range(1, STEPS + 1))
    for (_, loss, reward), (_, want_loss, want_reward) in zip(got, want, strict=True):
        assert loss == pytest.approx(want_loss, rel=1e-4, abs=1e-5)
        assert reward == pytest.approx(want_reward, rel=1e-3, abs=1e-5)
    kept = sorted(p.name for p in ckpts.iterdir() if checkpoints.step_of(p) is not None)
    assert len(kept) <= 2  # save_total_limit


def test_checkpoints_of_another_key_or_cut_short_are_removed(tmp_path):
    ckpts = tmp_path / "checkpoints"
    good, other, torn = (ckpts / f"checkpoint-{n}" for n in (2, 4, 3))
    for path, key in ((good, "k"), (other, "other"), (torn, "k")):
        path.mkdir(parents=True)
        for name in (*checkpoints.REQUIRED, "adapter_model.safetensors"):
            (path / name).write_text("x")
        step = checkpoints.step_of(path)
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        checkpoints.write_marker(path, key, step)
    (torn / "rng_state.pth").unlink()
    assert checkpoints.problem(torn, "k") == "missing rng_state.pth"
    assert "another training key" in checkpoints.problem(other, "k")
    assert checkpoints.prepare(ckpts, "k") == good
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2"]
    assert checkpoints.prepare(tmp_path / "none", "k") is None


def test_the_checkpoint_schedule(tmp_path):
    assert checkpoints.due(3, 6, 0.0) and not checkpoints.due(3, 5, 1e9)
    assert not checkpoints.due(0, 6, 1e9)  # 0: only at evaluations and on a stop
    assert checkpoints.due(None, 1, checkpoints.SAVE_EVERY_S)
    assert not checkpoints.due(None, 1, checkpoints.SAVE_EVERY_S - 1)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigint_mid_training_writes_a_checkpoint_then_interrupts(
    tmp_path, sphere_home, monkeypatch
):
    """The signal arrives during step 2 of 2: the step ends, checkpoint-2 is written, training
    stops before the adapter is saved, KeyboardInterrupt follows; the re-run resumes from step 2
    (no step left: it saves the adapter)."""
    from transformers import TrainerCallback

    class SignalAtStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:  # step 2 is under way
                os.kill(os.getpid(), signal.SIGINT)

    real_attach = __import__(
        "sphere_core.training.dpo", fromlist=["_attach_callbacks"]
    )._attach_callbacks

    def attach(trainer, cfg, key):
        progress = real_attach(trainer, cfg, key)
        trainer.add_callback(SignalAtStep())
        return progress

    monkeypatch.setattr("sphere_core.training.dpo._attach_callbacks", attach)
    train, out = _pairs(tmp_path), tmp_path / "model"
    cfg = _cfg(**{"training.save_steps": "0"})  # the stop alone writes the checkpoint
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        train_dpo(cfg, train, None, out, sphere_home, key="k2")
    assert time.monotonic() - began < 120
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    # TRL also writes a model card (README.md) beside the checkpoints; only checkpoints count
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir() if checkpoints.step_of(p))
    assert ckpts == ["checkpoint-2"], ckpts
    assert checkpoints.problem(out / "checkpoints" / "checkpoint-2", "k2") is None
    assert not (out / "adapter").exists()

    monkeypatch.undo()
    interrupts.reset()
    resumed = train_dpo(cfg, train, None, out, sphere_home, key="k2")
    assert resumed.metrics["resumed_from_step"] == 2 and resumed.metrics["global_step"] == STEPS


def test_a_second_trainer_says_who_holds_the_claim(tmp_path):
    holder = rf"run r round 1 is being trained by pid {os.getpid()}"
    with (
        training_claim(tmp_path, "run r round 1"),
        pytest.raises(TrainingError, match=holder),
        training_claim(tmp_path, "run r round 1", timeout_s=0),
    ):
        pass


def test_a_second_trainer_waits_for_the_first(tmp_path, caplog):
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with training_claim(tmp_path, "run r round 1"):
            held.set()
            time.sleep(1.0)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    with (
        caplog.at_level("INFO", logger="sphere.progress"),
        training_claim(tmp_path, "run r round 1", timeout_s=30),
    ):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]
    assert "is being trained by pid" in caplog.text and "waiting" in caplog.text
