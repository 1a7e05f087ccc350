"""A small process pool that runs one ``fn(*args)`` call per item with a hard timeout.

Owns worker processes only. math-verify's own timeout uses ``SIGALRM``, which does not work in
threads (Prefect thread runners, servers), so the deadline lives here instead: an item whose
worker does not answer within ``timeout_s`` counts as timed out, that worker is killed and a
fresh one is started in its place (in the background: the other workers go on meanwhile), and
the remaining items go on. A ``map`` of n items on w workers therefore takes at most about
``ceil(n / w) * timeout_s`` once the workers are up.

Workers are plain subprocesses (``python -m sphere_core.grading.worker``): no ``fork`` of a
parent holding torch threads, and no re-import of the caller's ``__main__`` as
``multiprocessing`` spawn would do. ``fn``/``warmup`` must be picklable by reference
(module-level functions, or ``functools.partial`` of them); ``fn``'s return value is sent back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from sphere_core.errors import GradingError

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ItemResult:
    status: str  # "ok" | "timeout" | "error"
    value: Any = None
    detail: str = ""


class _Worker:
    """One worker process; ``state`` is starting -> idle <-> busy."""

    def __init__(self, fn: Callable, warmup: Callable | None) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sphere_core.grading.worker",
                str(to_child_r),
                str(from_child_w),
            ],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)
        self.outbox.send((fn, warmup))
        self.state = "starting"
        self.since = time.monotonic()  # when it was started, or got its current item
        self.task: int | None = None

    def check_ready(self) -> None:
        """Read the start-up answer (the inbox is readable); raise if the worker failed."""
        try:
            kind, _, detail = self.inbox.recv()
        except (EOFError, OSError):
            kind, detail = "failed", f"exit code {self.proc.poll()}"
        if kind != "ready":
            self.kill()
            raise GradingError(f"grading worker failed to start: {detail}")
        self.state = "idle"

    def give(self, idx: int, args: tuple) -> None:
        self.outbox.send((idx, args))
        self.state, self.task, self.since = "busy", idx, time.monotonic()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self.inbox.close()
        self.outbox.close()

    def stop(self) -> None:
        try:
            self.outbox.send(None)
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class TimeoutPool:
    """Run ``fn(*args)`` for many argument tuples on ``workers`` processes, each with a deadline."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        workers: int = 2,
        timeout_s: float = 5.0,
        warmup: Callable[[], None] | None = None,
    ) -> None:
        if workers < 1:
            raise GradingError(f"grading.workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise GradingError(f"grading.timeout_s must be > 0, got {timeout_s}")
        self.fn = fn
        self.warmup = warmup
        self.workers = workers
        self.timeout_s = timeout_s
        self._pool: list[_Worker] = []
        self.replaced = 0

    @property
    def alive(self) -> int:
        return sum(1 for w in self._pool if w.proc.poll() is None)

    def _ensure_started(self, n_items: int) -> None:
        for worker in [w for w in self._pool if w.proc.poll() is not None]:
            worker.kill()
            self._pool.remove(worker)
        want = min(self.workers, max(n_items, 1))
        self._pool.extend(_Worker(self.fn, self.warmup) for _ in range(want - len(self._pool)))

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._pool.remove(worker)
        self._pool.append(_Worker(self.fn, self.warmup))  # starts while the others work
        self.replaced += 1

    def _deadline(self) -> float:
        return min(
            w.since + (self.timeout_s if w.state == "busy" else STARTUP_TIMEOUT_S)
            for w in self._pool
            if w.state != "idle"
        )

    def map(
        self, items: Sequence[tuple], progress: Callable[[int], None] | None = None
    ) -> list[ItemResult]:
        """One ``ItemResult`` per item, in order. A single item never raises.

        Raises ``GradingError`` only when a worker cannot start; the pool is then closed (a
        later call starts fresh workers).
        """
        if not items:
            return []
        try:
            return self._map(items, progress)
        except BaseException:
            self.close()
            raise

    def _map(
        self, items: Sequence[tuple], progress: Callable[[int], None] | None
    ) -> list[ItemResult]:
        self._ensure_started(len(items))
        results: dict[int, ItemResult] = {}
        pending = deque(range(len(items)))
        while len(results) < len(items):
            for worker in self._pool:
                if worker.state == "idle" and pending:
                    idx = pending.popleft()
                    worker.give(idx, tuple(items[idx]))
            waiting = [w for w in self._pool if w.state != "idle"]
            wait([w.inbox for w in waiting], timeout=max(0.0, self._deadline() - time.monotonic()))
            done = 0
            for worker in waiting:
                now = time.monotonic()
                if worker.state == "starting":
                    if worker.inbox.poll(0):
                        worker.check_ready()
                    elif now - worker.since >= STARTUP_TIMEOUT_S:
                        worker.kill()
                        raise GradingError(
                            f"grading worker did not start within {STARTUP_TIMEOUT_S:.0f}s"
                        )
                    continue
                idx = worker.task
                assert idx is not None
                if worker.inbox.poll(0):
                    try:
                        _, status, value = worker.inbox.recv()
                    except (EOFError, OSError):
                        results[idx] = ItemResult("error", None, "grading worker died")
                        log.warning("grading worker died on item %d; replacing it", idx)
                        self._replace(worker)
                    else:
                        worker.state, worker.task = "idle", None
                        ok = status == "ok"
                        results[idx] = ItemResult(
                            status, value if ok else None, "" if ok else str(value)
                        )
                    done += 1
                elif now - worker.since >= self.timeout_s:
                    results[idx] = ItemResult(
                        "timeout", None, f"no answer within {self.timeout_s:g}s"
                    )
                    log.warning(
                        "grading item %d timed out after %gs; replacing its worker",
                        idx,
                        self.timeout_s,
                    )
                    self._replace(worker)
                    done += 1
            if progress is not None and done:
                progress(done)
        return [results[i] for i in range(len(items))]

    def close(self) -> None:
        for worker in self._pool:
            worker.stop()
        self._pool = []

    def __del__(self) -> None:  # best effort; close() is the real API
        with contextlib.suppress(Exception):
            self.close()
