"""One training per run and round at a time: the claim on a round's ``model/`` dir.

``sphere train`` (or ``run``/``resume`` reaching DPO) holds an exclusive inter-process lock
(POSIX ``flock``, released by the OS when the holder dies, also on SIGKILL) on
``model/.train.lock`` while it checks for a finished training and trains. A second process of
the same run and round waits for it — saying once who holds the claim — and then finds the
training finished (reuses it) or, if the holder was stopped, resumes from its checkpoint.
``timeout_s`` bounds the wait (0: do not wait): past it, a ``TrainingError`` names the holder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sphere_core.errors import TrainingError
from sphere_core.progress import emit

LOCK_NAME = ".train.lock"
POLL_S = 0.5


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        data = {}
    if not data:
        return "another process"
    return f"pid {data.get('pid')} on {data.get('host')} (since {data.get('since')})"


def _write_holder(fd: int, what: str) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "what": what,
        "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)


@contextlib.contextmanager
def training_claim(model_dir: Path, what: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the training claim of ``model_dir`` (``what``: e.g. ``run r1 round 1``) for the
    block."""
    import fcntl

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(model_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, fcntl, what, timeout_s)
        _write_holder(fd, what)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, fcntl, what: str, timeout_s: float | None) -> None:
    from sphere_core import interrupts

    began = time.monotonic()
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = _holder(fd)
        waited = time.monotonic() - began
        if timeout_s is not None and waited >= timeout_s:
            raise TrainingError(
                f"{what} is being trained by {holder}; wait for it to finish "
                f"(or stop it), then run the same command again"
            )
        if not announced:
            emit(
                "info",
                f"dpo: {what} is being trained by {holder}; waiting for it "
                "(its result is reused, or its checkpoint resumed)",
                stage="dpo",
            )
            announced = True
        interrupts.check()
        time.sleep(POLL_S)
