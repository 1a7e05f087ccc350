"""The ``sphere`` command line: registers the command modules and owns the error contract.

:func:`main` checks ``$SPHERE_HOME`` (:func:`sphere_core.paths.writable_dir`), applies the
Prefect defaults (:func:`flows.prefect_env.configure_prefect_env`), opens the invocation's
log file (:class:`sphere_core.logs.LogSession`) and turns SIGTERM into
:class:`sphere_core.errors.Terminated` in the main thread. Every failure ends as one line on
stderr and an exit code (``docs/errors.md``): ``SphereError`` -> ``error: ...`` and its
class's code; click usage errors -> 2; anything else -> ``internal error: ...`` and 70;
Ctrl-C -> 130; SIGTERM -> 143. Tracebacks go to the log file, whose path the line names.

Every command parameter named in :data:`NAME_PARAMS` (``--run-id``, ``--run``, the run id of
``resume``) is checked with :func:`sphere_core.paths.validate_name` while the command line is
parsed, before any command code runs.

Importing this module imports neither prefect nor torch (``sphere --help`` stays fast).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

app = typer.Typer(
    name="sphere",
    help=(
        "SPHERE: self-generated preference data (pruned MCTS + PRM) and DPO for math reasoning.\n\n"
        "Typical use: `sphere run --preset demo` runs ingest -> search -> routing -> pairs -> DPO "
        "-> evaluation -> report, on CPU.\n\n"
        "Embedded models (offline, nothing downloaded), usable as a model path: `embedded` = "
        "Qwen2.5-Coder-0.5B-Instruct, the policy default; `embedded-small` = "
        "SmolLM2-135M-Instruct, the fast small model.\n\n"
        "Exit codes: 0 ok, 1 input/run failure, 2 usage/config, 3 store/home, 70 internal "
        "error, 130 interrupted, 143 terminated. Each invocation logs to "
        "$SPHERE_HOME/logs/ (default ./.sphere/logs/); an error line names its log file."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module defines register(app). Missing modules (stage not built yet) are skipped.
# serve_cmds comes after pipeline_cmds so its `serve` is the one registered.
_COMMAND_MODULES = (
    "flows.commands.pipeline_cmds",  # run, resume, generate
    "flows.commands.serve_cmds",  # serve
    "flows.commands.train_cmds",  # train, evaluate, report
    "flows.commands.eval_cmds",  # compare
    "flows.commands.store_cmds",  # runs, routes, db
    "flows.commands.data_cmds",  # ingest, grade
    "flows.commands.config_cmds",  # config
)

for _mod in _COMMAND_MODULES:
    try:
        importlib.import_module(_mod).register(app)
    except ModuleNotFoundError as _err:  # pragma: no cover - only while a stage is unbuilt
        if _err.name != _mod:
            raise

NAME_PARAMS = {"run_id": "run id", "run": "run id", "run_a": "run id", "run_b": "run id"}
"""Command parameters whose values become directory names under ``$SPHERE_HOME``."""

TERM_GRACE_ENV = "SPHERE_TERM_GRACE_S"
DEFAULT_TERM_GRACE_S = 20.0
"""After SIGTERM, the process exits 143 at the latest this many seconds later."""

_log = logging.getLogger("sphere.cli")


def build_command() -> Any:
    """The click command tree of ``app`` with the name check on every :data:`NAME_PARAMS` param."""
    command = typer.main.get_command(app)
    _guard_names(command)
    return command


def _guard_names(command: Any) -> None:
    for param in getattr(command, "params", []):
        if param.name in NAME_PARAMS:
            param.callback = _name_callback(NAME_PARAMS[param.name], param.callback)
    for sub in getattr(command, "commands", {}).values():
        _guard_names(sub)


def _name_callback(what: str, inner: Any) -> Any:
    def check(ctx: Any, param: Any, value: Any) -> Any:
        from sphere_core.paths import validate_name

        if value is not None:
            validate_name(value, what)
        return inner(ctx, param, value) if inner is not None else value

    return check


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code; failures end as one line on stderr."""
    from flows.prefect_env import configure_prefect_env
    from sphere_core.errors import SphereError
    from sphere_core.logs import LogSession, one_line
    from sphere_core.paths import sphere_home, writable_dir

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or "--help" in args:  # help needs no home and writes no log
        try:
            return _invoke(args)
        except BaseException as exc:  # noqa: BLE001 - usage errors in front of --help
            return _report(exc, None)
    try:
        home = writable_dir(sphere_home(), "SPHERE_HOME")
    except SphereError as err:
        _say(f"error: {one_line(err)}")
        return err.exit_code
    applied = configure_prefect_env(home)
    if not _is_tty(sys.stderr):  # library progress bars are carriage-return noise in a log file
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # e.g. transformers' GGUF conversion bar
    try:
        with LogSession(home, args) as session, _sigterm_raises():
            try:
                return _invoke(args)
            except BaseException as exc:  # noqa: BLE001 - the error contract
                return _report(exc, session)
    except SphereError as err:  # logs/ unusable although the home is writable
        _say(f"error: {one_line(err)}")
        return err.exit_code
    finally:
        _cancel_watchdog()
        for key, value in applied.items():  # leave the process as found (in-process callers)
            if os.environ.get(key) == value:
                del os.environ[key]


def _invoke(args: list[str]) -> int:
    """Parse and run one command. Unlike click's ``main``, lets KeyboardInterrupt (and
    Terminated) propagate instead of turning them into a silent exit 130."""
    from flows.commands.cli_support import forget_run

    forget_run()
    _interrupts().reset()
    command = build_command()
    try:
        with command.make_context("sphere", list(args)) as ctx:
            result = command.invoke(ctx)
    except typer.Exit as exc:  # --help, ctx.exit(), typer.Exit(code)
        return exc.exit_code
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `sphere`, `sphere config`: help, exit 0
            text = exc.format_message()  # empty when typer's rich help already printed it
            if text:
                typer.echo(text)
            return 0
        raise
    return result if isinstance(result, int) else 0


def _report(exc: BaseException, session: Any) -> int:
    """One line on stderr for ``exc`` (full traceback to the log file); returns the exit code."""
    from sphere_core import errors
    from sphere_core.logs import one_line

    log_path = getattr(session, "path", None)
    where = f" (log: {log_path})" if log_path else ""

    def record(message: str) -> None:
        if session is not None:
            session.record_exception(exc, message)

    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(exc, BrokenPipeError):  # `sphere ... | head`: the reader left; not an error
        _silence_stdout()
        return 0
    signum = _termination_signal(exc)
    requested = _interrupts().stop_signal()
    # after Ctrl-C to the process group the ephemeral Prefect server is gone too: what fails
    # while stopping (its API calls) is the interruption, not a bug
    stopping = requested is not None and not isinstance(exc, errors.SphereError)
    if stopping and signum is None and requested != signal.SIGINT:
        signum = requested
    if signum is not None or stopping or isinstance(exc, (KeyboardInterrupt, typer.Abort)):
        name = signal.Signals(signum).name if signum is not None else "SIGINT"
        verb = "terminated" if signum is not None else "interrupted"
        record(f"{verb} by {name}")
        _say(f"{verb} ({name}){_resume_hint(session)}{where}")
        _watchdog_reported.set()
        return errors.EXIT_TERMINATED if signum is not None else errors.EXIT_INTERRUPTED
    disk_error = _disk_error(exc)
    if disk_error is not None:
        from sphere_core import disk

        record(f"disk full: {disk.describe(disk_error)}")
        _say(
            f"error: {disk.describe(disk_error)}; free some space, "
            f"then{_continue_with(session)}{where}"
        )
        return errors.EXIT_INFRA
    if _is_click_error(exc):
        record("usage error")
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _say(f"error: {one_line(exc.format_message())}{hint}")
        return int(getattr(exc, "exit_code", errors.EXIT_USAGE) or errors.EXIT_USAGE)
    user = _user_error(exc)
    if user is not None:
        record(f"{type(user).__name__}: {one_line(user)}")
        # usage/config errors are complete in their message; others point at the log
        suffix = "" if user.exit_code == errors.EXIT_USAGE else where
        _say(f"error: {one_line(user)}{suffix}")
        return user.exit_code
    record("internal error")
    detail = one_line(exc)
    trace = f" (traceback in {log_path})" if log_path else ""
    _say(f"internal error: {type(exc).__name__}{': ' + detail if detail else ''}{trace}")
    return errors.EXIT_INTERNAL


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of a closed pipe stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _user_error(exc: BaseException) -> Any:
    """``exc`` if it is a SphereError, or the first SphereError in an exception group."""
    from sphere_core.errors import SphereError

    if isinstance(exc, SphereError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _user_error(inner)
            if found is not None:
                return found
    return None


def _is_click_error(exc: BaseException) -> bool:
    """A click usage error, from click itself or from the copy typer vendors."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__) and hasattr(
        exc, "format_message"
    )


def _termination_signal(exc: BaseException) -> int | None:
    """The signal number when ``exc`` stands for SIGTERM (ours or Prefect's TerminationSignal)."""
    from sphere_core.errors import Terminated

    if isinstance(exc, Terminated):
        return exc.signum
    if type(exc).__name__ == "TerminationSignal" and isinstance(getattr(exc, "signal", None), int):
        return exc.signal
    return None


def _resume_hint(session: Any = None) -> str:
    from flows.commands.cli_support import current_run

    run_id = current_run()
    if run_id:
        return f"; run {run_id} stopped, continue it with `sphere resume {run_id}`"
    argv = list(getattr(session, "argv", None) or [])
    if argv and argv[0] in RESUMABLE_COMMANDS:
        return f"; continue with `{_command_line(argv)}` (it resumes where this one stopped)"
    return ""


RESUMABLE_COMMANDS = ("train", "evaluate")
"""Commands without a run record of their own whose re-run continues where a stop left them."""


def _command_line(argv: list[str]) -> str:
    import shlex

    return shlex.join(["sphere", *argv])


def _continue_with(session: Any) -> str:
    from flows.commands.cli_support import current_run

    run_id = current_run()
    if run_id:
        return f" continue run {run_id} with `sphere resume {run_id}`"
    argv = list(getattr(session, "argv", None) or [])
    return f" run `{_command_line(argv)}` again" if argv else " run the command again"


def _disk_error(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT/EROFS error ``exc`` is, was caused by, or holds (exception groups)."""
    from sphere_core.disk import is_disk_full

    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if is_disk_full(current):
            return current  # type: ignore[return-value]
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend((current.__cause__, current.__context__))
    return None


def _interrupts() -> Any:
    from sphere_core import interrupts

    return interrupts


def _say(line: str) -> None:
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)


# --- SIGTERM -> Terminated --------------------------------------------------------------------

_watchdog: threading.Timer | None = None
_watchdog_reported = threading.Event()


def term_grace_s() -> float:
    try:
        return max(float(os.environ.get(TERM_GRACE_ENV, DEFAULT_TERM_GRACE_S)), 0.0)
    except ValueError:
        return DEFAULT_TERM_GRACE_S


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """In the main thread: the first SIGTERM raises Terminated and arms the exit watchdog; a
    second one exits 143 at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        from sphere_core.errors import EXIT_TERMINATED, Terminated

        received.append(signum)
        if len(received) > 1:
            _log.error("second %s: exiting now", signal.Signals(signum).name)
            if not _watchdog_reported.is_set():
                _say(f"terminated ({signal.Signals(signum).name} twice), stopped without cleanup")
            logging.shutdown()
            os._exit(EXIT_TERMINATED)
        _watchdog_reported.clear()
        _arm_watchdog(term_grace_s())
        _stopping(signum)
        raise Terminated(signum)

    def on_sigint(signum: int, frame: Any) -> None:
        _stopping(signum)
        raise KeyboardInterrupt

    raise_exceptions = logging.raiseExceptions
    previous = signal.signal(signal.SIGTERM, handler)
    # also when started as a script's background job, which would otherwise ignore SIGINT
    previous_int = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if not _interrupts().stop_requested():  # after a stop, log workers still flush at exit
            logging.raiseExceptions = raise_exceptions


def _stopping(signum: int) -> None:
    """A stop signal arrived: loops in worker threads stop too, and log handlers whose server is
    gone (Prefect's API logger, when the ephemeral server got the signal as well) stay quiet."""
    _interrupts().request_stop(signum)
    logging.raiseExceptions = False


def _arm_watchdog(grace_s: float) -> None:
    global _watchdog
    _cancel_watchdog()
    _watchdog = threading.Timer(grace_s, _expire, args=(grace_s,))
    _watchdog.daemon = True
    _watchdog.start()


def _expire(grace_s: float) -> None:
    from sphere_core.errors import EXIT_TERMINATED

    _log.error("shutdown still running %.0f s after SIGTERM: exiting now", grace_s)
    if not _watchdog_reported.is_set():
        _say(f"terminated (SIGTERM); shutdown took longer than {grace_s:.0f} s, stopped it")
    logging.shutdown()
    os._exit(EXIT_TERMINATED)


def _cancel_watchdog() -> None:
    global _watchdog
    timer, _watchdog = _watchdog, None
    if timer is not None:
        timer.cancel()


def entrypoint() -> None:
    """The ``sphere`` console script. After a SIGTERM the exit itself (atexit handlers: worker
    threads, the ephemeral Prefect server) is bounded by the same grace period."""
    code = main()
    from sphere_core.errors import EXIT_TERMINATED

    if code == EXIT_TERMINATED:
        _watchdog_reported.set()
        _arm_watchdog(term_grace_s())
    sys.exit(code)


if __name__ == "__main__":
    entrypoint()
