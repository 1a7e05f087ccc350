"""ProgressDisplay renders sphere_core.progress events: one flushed plain line per event when
the output is not a terminal (log files, CI), per-stage bars and a status line on a terminal."""

from __future__ import annotations

import io
import logging
import re
import threading

import pytest
from rich.console import Console

from flows.progress_render import ProgressDisplay, format_elapsed
from sphere_core.progress import LOGGER_NAME, emit

LINE = re.compile(r"^\[\d\d:\d\d:\d\d \+\d+s\] (.*)$")


class FlushCounter(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


def test_plain_lines_when_not_a_terminal():
    stream = FlushCounter()
    with ProgressDisplay(terminal=False, stream=stream):
        emit("stage", "stage1: 3 shards", stage="stage1", total=3)
        emit("shard", "stage1 shard 1/3: 4 questions in 2.0s", stage="stage1", done=1, total=3)
        emit("step", "DPO step 10/40 loss 0.693")
        emit("info", "evaluating gsm8k")
    lines = stream.getvalue().splitlines()
    assert [LINE.match(ln).group(1) for ln in lines] == [
        "stage1: 3 shards",
        "stage1 shard 1/3: 4 questions in 2.0s",
        "DPO step 10/40 loss 0.693",
        "evaluating gsm8k",
    ]
    assert stream.flushes >= 4  # each line is flushed as it is written


def test_plain_lines_go_to_stderr_by_default(capsys):
    with ProgressDisplay(terminal=False):
        worker = threading.Thread(target=emit, args=("info", "hello from a worker thread"))
        worker.start()
        worker.join()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert LINE.match(captured.err.strip()).group(1) == "hello from a worker thread"


def test_events_after_the_display_are_not_rendered():
    stream = io.StringIO()
    with ProgressDisplay(terminal=False, stream=stream):
        pass
    emit("info", "too late")
    assert stream.getvalue() == ""
    assert not any(
        isinstance(h, logging.Handler) and type(h).__name__ == "_EventHandler"
        for h in logging.getLogger(LOGGER_NAME).handlers
    )


def test_bars_and_status_line_on_a_terminal():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100, color_system=None)
    with ProgressDisplay(terminal=True, console=console) as display:
        emit("stage", "stage1 started", stage="stage1", total=4)
        emit("shard", "stage1 shard 1/4 done", stage="stage1", done=1, total=4)
        emit("shard", "stage1 shard 3/4 done", stage="stage1", done=3, total=4)
        emit("shard", "stage2 shard 1/2 done", stage="stage2", done=1, total=2)
        emit("step", "DPO step 5/20")
        bars = {task.description: (task.completed, task.total) for task in display._progress.tasks}
        status = display._progress.status
    assert bars == {"stage1": (3, 4), "stage2": (1, 2)}
    assert status == "DPO step 5/20"
    screen = buffer.getvalue()
    assert "stage1 started" in screen  # stage messages print above the bars
    assert "3/4" in screen and "1/2" in screen and "DPO step 5/20" in screen
    assert "stage1 shard 1/4 done" not in screen  # shard events move bars, no line each


def test_auto_mode_follows_the_console():
    assert (
        ProgressDisplay(console=Console(file=io.StringIO(), force_terminal=False)).terminal is False
    )
    assert (
        ProgressDisplay(console=Console(file=io.StringIO(), force_terminal=True)).terminal is True
    )


def test_a_quiet_progress_logger_is_opened_and_restored():
    logger = logging.getLogger(LOGGER_NAME)
    saved = logger.level
    logger.setLevel(logging.WARNING)
    try:
        stream = io.StringIO()
        with ProgressDisplay(terminal=False, stream=stream):
            emit("info", "visible")
        assert "visible" in stream.getvalue()
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(saved)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "+0s"), (42.9, "+42s"), (185, "+3m05s"), (3723, "+1h02m03s")]
)
def test_elapsed_format(seconds, text):
    assert format_elapsed(seconds) == text


def test_library_bars_are_off_when_stderr_is_a_log_file(sphere_home, monkeypatch, capsys):
    """Model conversion/loading bars (tqdm, huggingface_hub) would fill a log with carriage
    returns; the CLI turns them off when stderr is not a terminal and leaves a user's choice."""
    import os

    from flows.cli import main

    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, "placeholder")  # monkeypatch restores the real value afterwards
        monkeypatch.delenv(name)
    assert main(["runs"]) == 0
    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert main(["runs"]) == 0
    assert os.environ["TQDM_DISABLE"] == "0"
