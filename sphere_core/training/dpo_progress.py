"""DPO progress: the trainer's log records as ``sphere_core.progress`` events."""

from __future__ import annotations

import time

from sphere_core.progress import emit


def progress_callback():
    from transformers import TrainerCallback

    class DPOProgress(TrainerCallback):
        """Turns the trainer's log records into ``sphere_core.progress`` events."""

        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.step_times: list[float] = []
            self._last = self.started
            self.final = False  # set for the evaluation of the best adapter after training

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.step_times.append(now - self._last)
            self._last = now

        def on_evaluate(self, args, state, control, **kwargs):
            self._last = time.perf_counter()  # evaluation time is not a step's time

        def on_save(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            k, n = state.global_step, state.max_steps
            elapsed = time.perf_counter() - self.started
            if "loss" in logs:
                loss, margin = float(logs["loss"]), float(logs.get("rewards/margins", float("nan")))
                emit(
                    "step",
                    f"dpo step {k}/{n}: loss {loss:.4f}, margin {margin:.3f}, {elapsed:.1f}s",
                    stage="dpo",
                    step=k,
                    total=n,
                    loss=loss,
                    margin=margin,
                    elapsed_s=round(elapsed, 2),
                    accuracy=logs.get("rewards/accuracies"),
                )
            elif "eval_loss" in logs:
                loss = float(logs["eval_loss"])
                margin = float(logs.get("eval_rewards/margins", float("nan")))
                what = "best adapter's eval" if self.final else f"eval at step {k}/{n}"
                emit(
                    "info",
                    f"dpo {what}: loss {loss:.4f}, margin {margin:.3f}, {elapsed:.1f}s",
                    stage="dpo",
                    step=k,
                    total=n,
                    eval_loss=loss,
                    margin=margin,
                    elapsed_s=round(elapsed, 2),
                )

    return DPOProgress()
