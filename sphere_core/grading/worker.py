"""Entry point of one grading worker process: ``python -m sphere_core.grading.worker R W``.

Reads ``(fn, warmup)`` then ``(index, args)`` messages from file descriptor ``R`` and answers
``(index, "ok", fn(*args))`` (or ``(index, "error", message)``) on ``W``. Started by
``pool.TimeoutPool`` as a plain subprocess (not ``multiprocessing``), so the parent's
``__main__`` is never re-imported.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection


def serve(inbox: Connection, outbox: Connection) -> None:
    try:
        fn, warmup = inbox.recv()
        if warmup is not None:
            warmup()
    except Exception as err:  # noqa: BLE001 - reported to the parent
        outbox.send(("failed", None, f"{type(err).__name__}: {err}"))
        return
    outbox.send(("ready", None, None))
    while True:
        try:
            msg = inbox.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if msg is None:
            return
        idx, args = msg
        try:
            outbox.send((idx, "ok", fn(*args)))
        except Exception as err:  # noqa: BLE001 - one bad item must not stop the worker
            outbox.send((idx, "error", f"{type(err).__name__}: {err}"[:500]))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    inbox = Connection(int(args[0]), writable=False)
    outbox = Connection(int(args[1]), readable=False)
    serve(inbox, outbox)


if __name__ == "__main__":
    main()
