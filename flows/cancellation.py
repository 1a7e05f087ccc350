"""Cancelling a flow run from Prefect's UI (or API) while DPO trains.

What the UI's *Cancel* does to a deployment run served by ``sphere serve`` (or a worker): the
flow run is set to *Cancelling*; the runner tells the flow-run process over its control channel
("cancel") and, once the process acknowledges, sends it SIGTERM; 30 s later it sends SIGKILL.
Prefect's engine then ends the run *Cancelled* — unless the SIGTERM handler in place at that
moment is not Prefect's own, in which case the process cannot acknowledge and the run ends
*Crashed*.

DPO swaps the handlers for the length of training (``sphere_core.interrupts.deferred``) so that a
signal finishes the optimizer step under way and writes a checkpoint first. For that window this
module supplies the missing piece: just before the deferred SIGTERM is delivered to Prefect's
handler, :func:`record_cancel_intent` asks the API whether this flow run is *Cancelling*; if so it
records the cancel intent the acknowledgement would have recorded, and the engine ends the run
*Cancelled* (resumable from the checkpoint) instead of *Crashed*. Any other SIGTERM (a pod
eviction, ``kill``) still ends it *Crashed*.

Uses ``prefect._internal.control_listener`` (the engine's one source of the intent; Prefect is
pinned in ``pyproject.toml``); if that module changes shape the hook does nothing and a cancelled
training run ends *Crashed*, which ``tests/flows/test_signals_long.py`` would show.
"""

from __future__ import annotations

import signal

from sphere_core import interrupts


def flow_run_is_cancelling() -> bool:
    """Whether the flow run this process executes is in state Cancelling (False outside one)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(context.flow_run.id).state
    return state is not None and state.is_cancelling()


def record_cancel_intent(signum: int) -> None:
    """Before a deferred SIGTERM reaches Prefect's handler: record a cancel requested through the
    API as the control channel would have."""
    if signum != signal.SIGTERM:
        return
    from prefect._internal import control_listener

    setter = getattr(control_listener, "_set_intent", None)
    if setter is None or control_listener.get_intent() is not None:
        return
    if flow_run_is_cancelling():
        setter("cancel")


def install() -> None:
    """Register :func:`record_cancel_intent` with the deferred-signal delivery (idempotent)."""
    interrupts.on_delivery(record_cancel_intent)
