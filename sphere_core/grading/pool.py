"""A small process pool that runs one ``fn(a, b) -> bool`` call per item with a hard timeout.

Owns worker processes only. math-verify's own timeout uses ``SIGALRM``, which does not work in
threads (Prefect thread runners, servers), so the deadline lives here instead: an item whose
worker does not answer within ``timeout_s`` counts as timed out, that worker is killed and a
fresh one takes its place, and the remaining items go on. Workers are plain subprocesses
(``python -m sphere_core.grading.worker``): no ``fork`` of a parent holding torch threads, and
no re-import of the caller's ``__main__`` as ``multiprocessing`` spawn would do.
``fn``/``warmup`` must be picklable by reference (module-level functions).
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

from sphere_core.errors import GradingError

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ItemResult:
    status: str  # "ok" | "timeout" | "error"
    value: bool = False
    detail: str = ""


class _Worker:
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
        self.task: int | None = None
        self.started = 0.0

    def wait_ready(self, timeout: float) -> None:
        ok = self.inbox.poll(timeout)
        try:
            kind, _, detail = self.inbox.recv() if ok else ("timeout", None, None)
        except (EOFError, OSError):
            kind, detail = "failed", f"exit code {self.proc.poll()}"
        if kind != "ready":
            self.kill()
            if kind == "timeout":
                raise GradingError(f"grading worker did not start within {timeout:.0f}s")
            raise GradingError(f"grading worker failed to start: {detail}")

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
    """Run ``fn(a, b)`` for many ``(a, b)`` pairs on ``workers`` processes, each with a deadline."""

    def __init__(
        self,
        fn: Callable[[str, str], bool],
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
        starting = [_Worker(self.fn, self.warmup) for _ in range(want - len(self._pool))]
        for worker in starting:  # started together, then awaited one by one
            worker.wait_ready(STARTUP_TIMEOUT_S)
        self._pool.extend(starting)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._pool.remove(worker)
        fresh = _Worker(self.fn, self.warmup)
        fresh.wait_ready(STARTUP_TIMEOUT_S)
        self._pool.append(fresh)
        self.replaced += 1

    def map(
        self, items: Sequence[tuple[str, str]], progress: Callable[[int], None] | None = None
    ) -> list[ItemResult]:
        """One ``ItemResult`` per item, in order. A single item never raises."""
        if not items:
            return []
        self._ensure_started(len(items))
        results: dict[int, ItemResult] = {}
        pending = deque(range(len(items)))
        while pending or any(w.task is not None for w in self._pool):
            for worker in self._pool:
                if worker.task is None and pending:
                    idx = pending.popleft()
                    worker.outbox.send((idx, *items[idx]))
                    worker.task, worker.started = idx, time.monotonic()
            busy = [w for w in self._pool if w.task is not None]
            deadline = min(w.started for w in busy) + self.timeout_s
            ready = wait([w.inbox for w in busy], timeout=max(0.0, deadline - time.monotonic()))
            done = 0
            for worker in busy:
                idx = worker.task
                assert idx is not None
                if worker.inbox in ready:
                    try:
                        _, status, value = worker.inbox.recv()
                    except (EOFError, OSError):
                        results[idx] = ItemResult("error", False, "grading worker died")
                        log.warning("grading worker died on item %d; replacing it", idx)
                        self._replace(worker)
                    else:
                        worker.task = None
                        ok = status == "ok"
                        results[idx] = ItemResult(
                            status, bool(value) if ok else False, "" if ok else str(value)
                        )
                    done += 1
                elif time.monotonic() - worker.started >= self.timeout_s:
                    results[idx] = ItemResult(
                        "timeout", False, f"no answer within {self.timeout_s:g}s"
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
