"""Stop requests for long work: SIGINT/SIGTERM become a process-wide stop event that DPO and
the generation loops check at safe points.

Two ways a signal reaches long work:

* :func:`deferred` (DPO): in the main thread, for the duration of the block, SIGINT and SIGTERM
  only *request* a stop. The work notices (:func:`stop_requested`) at its next safe point
  (after an optimizer step: write a checkpoint, then return). When the block ends, the signal
  is delivered to the handlers that were installed before it (the CLI's: exit 130/143 with the
  line naming the command that resumes; Prefect's ``TerminationSignal`` inside a flow run; the
  default ``KeyboardInterrupt``). A second signal inside the block is delivered at once.
* anywhere else (generation batches and decode steps, which may run in worker threads): the
  CLI's handlers call :func:`request_stop` before raising in the main thread, and the loops
  call :func:`check`, which raises the same interruption in their own thread.

Owns the event and the handler swap only; what "a safe point" is belongs to the caller. The
orchestration layer may register :func:`on_delivery` hooks that run just before a deferred
signal is delivered (the flows use one to tell a cancellation requested from Prefect's UI from
any other SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from sphere_core.errors import Terminated

_stop = threading.Event()
_signum: int | None = None
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_delivery_hooks: list[Callable[[int], None]] = []


def on_delivery(hook: Callable[[int], None]) -> None:
    """Run ``hook(signum)`` before a signal deferred by :func:`deferred` is delivered (once per
    hook object; a hook that raises an ``Exception`` is skipped)."""
    if hook not in _delivery_hooks:
        _delivery_hooks.append(hook)


def request_stop(signum: int = signal.SIGINT) -> None:
    """Ask every loop that checks to stop (the first signal's number is kept)."""
    global _signum
    if not _stop.is_set():
        _signum = int(signum)
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def stop_signal() -> int | None:
    """The signal that asked for the stop (None while none did)."""
    return _signum if _stop.is_set() else None


def reset() -> None:
    """Forget a stop request (the CLI does, before each command)."""
    global _signum
    _stop.clear()
    _signum = None


def interruption(signum: int | None) -> BaseException:
    """The exception that stands for ``signum``: KeyboardInterrupt (SIGINT) or Terminated."""
    if signum is None or signum == signal.SIGINT:
        return KeyboardInterrupt()
    return Terminated(signum)


def check() -> None:
    """Raise the requested interruption, if a stop was requested (cheap: one flag test)."""
    if _stop.is_set():
        raise interruption(_signum)


def _deliver(signum: int, previous: Any) -> None:
    """Run the handler that was installed before :func:`deferred` for ``signum``; if it does not
    raise (ignored, or no Python handler), raise the interruption here."""
    for hook in _delivery_hooks:
        try:
            hook(signum)
        except Exception:  # a hook must not replace the interruption
            logging.getLogger(__name__).debug("delivery hook %r failed", hook, exc_info=True)
    if callable(previous):
        previous(signum, None)
    elif previous == signal.SIG_DFL and signum == signal.SIGTERM:
        signal.raise_signal(signum)  # the default: the process ends with 143
    raise interruption(signum)


@contextlib.contextmanager
def deferred() -> Iterator[bool]:
    """Within the block SIGINT/SIGTERM request a stop instead of raising; yields whether the
    handlers were swapped (only in the main thread; elsewhere the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    # a signal the process ignores (SIG_IGN) stays ignored
    previous = {s: h for s in _STOP_SIGNALS if (h := signal.getsignal(s)) != signal.SIG_IGN}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def handler(signum: int, frame: Any) -> None:
        if _stop.is_set():  # a second signal: stop now, without the safe point
            restore()
            _deliver(signum, previous[signum])
        request_stop(signum)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield True
    finally:
        restore()
    if _stop.is_set():
        _deliver(_signum or signal.SIGINT, previous.get(_signum or signal.SIGINT))
