"""Stop requests (sphere_core/interrupts.py): inside ``deferred`` a signal only requests a stop and
is delivered to the previous handler when the block ends; a second signal is delivered at once;
an ignored signal stays ignored; ``check`` raises the requested interruption in any thread."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from sphere_core import interrupts
from sphere_core.errors import Terminated


@pytest.fixture(autouse=True)
def _clean():
    interrupts.reset()
    yield
    interrupts.reset()


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def test_a_signal_inside_the_block_is_delivered_when_it_ends(monkeypatch):
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    reached_end = False
    try:
        with pytest.raises(Terminated), interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert interrupts.stop_requested() and interrupts.stop_signal() == signal.SIGTERM
            reached_end = True  # the work went on to its safe point
        assert signal.getsignal(signal.SIGTERM) is _raise_terminated  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert reached_end


def test_a_second_signal_is_delivered_at_once():
    steps = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("after first")
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("after second")  # never reached
    assert steps == ["after first"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
        assert not interrupts.stop_requested()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_check_raises_the_requested_interruption_in_a_worker_thread():
    interrupts.check()  # nothing requested: no-op
    interrupts.request_stop(signal.SIGTERM)
    caught: list[BaseException] = []

    def worker():
        try:
            interrupts.check()
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            caught.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert isinstance(caught[0], Terminated) and caught[0].signum == signal.SIGTERM
    interrupts.reset()
    interrupts.request_stop(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()


def test_outside_the_main_thread_the_block_changes_nothing():
    swapped: list[bool] = []

    def worker():
        with interrupts.deferred() as did:
            swapped.append(did)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert swapped == [False]


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [
        (signal.SIGINT, 130, "interrupted (SIGINT)"),
        (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    ],
)
def test_a_failure_while_stopping_is_the_interruption_not_a_bug(
    sphere_home, capsys, monkeypatch, signum, code, word
):
    """Ctrl-C to the process group also stops the ephemeral Prefect server: the API call that then
    fails is reported as the interruption (not exit 70)."""
    from flows.cli import main
    from flows.commands import config_cmds

    def stopping(*args, **kwargs):
        interrupts.request_stop(signum)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(config_cmds, "resolve_config", stopping)
    assert main(["config", "show"]) == code
    line = capsys.readouterr().err.strip()
    assert line.startswith(word) and "\n" not in line


def test_delivery_hooks_run_before_the_previous_handler_and_cannot_replace_it(monkeypatch):
    order: list[str] = []

    def hook(signum):
        order.append(f"hook {signum}")

    def broken(signum):
        order.append("broken")
        raise RuntimeError("a hook that fails")

    def previous_handler(signum, frame):
        order.append("handler")
        raise Terminated(signum)

    monkeypatch.setattr(interrupts, "_delivery_hooks", [])
    interrupts.on_delivery(broken)
    interrupts.on_delivery(hook)
    interrupts.on_delivery(hook)  # registered once
    previous = signal.signal(signal.SIGTERM, previous_handler)
    try:
        with pytest.raises(Terminated), interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            order.append("safe point")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert order == ["safe point", "broken", f"hook {int(signal.SIGTERM)}", "handler"]
