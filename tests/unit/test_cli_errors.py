"""The CLI error contract (flows/cli.py, docs/errors.md): one line on stderr per failure, the
documented exit code, the traceback in a per-invocation log file under $SPHERE_HOME/logs/
whose path that line names; SIGTERM becomes exit 143; main leaves the process as it found it.

Faults are injected into a real command (`sphere config show`) by replacing the function it
calls; everything else is the real CLI.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import main
from flows.commands import config_cmds
from flows.commands.cli_support import announce_run
from sphere_core.errors import InputDataError, StoreError, Terminated
from sphere_core.logs import KEEP_LOGS
from tests.conftest import REPO_ROOT


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def logged_at(line: str, marker: str) -> Path:
    match = re.search(rf"\({marker} (.+\.log)\)$", line)
    assert match, line
    return Path(match.group(1))


def fail_with(monkeypatch, exc_factory) -> None:
    def broken(*args, **kwargs):
        raise exc_factory()

    monkeypatch.setattr(config_cmds, "resolve_config", broken)


def test_usage_errors_are_one_line_exit_2(sphere_home, capsys):
    code, out, err = run_cli(capsys, "generate", "--bogus")
    assert code == 2 and out == ""
    assert one_line(err) == "error: No such option: --bogus (see `sphere generate --help`)"
    code, _, err = run_cli(capsys, "runs", "--limit", "x")
    assert code == 2 and one_line(err).startswith("error: Invalid value for '--limit'")
    code, _, err = run_cli(capsys, "config", "show", "--set", "search.bogus=1")
    assert code == 2 and one_line(err) == "error: unknown config key 'search.bogus'"


def test_input_failure_is_exit_1_with_its_log(sphere_home, capsys, tmp_path):
    code, out, err = run_cli(capsys, "ingest", str(tmp_path / "missing.jsonl"))
    assert code == 1 and out == ""
    line = one_line(err)
    assert line.startswith(f"error: question file not found: {tmp_path / 'missing.jsonl'}")
    log = logged_at(line, "log:")
    assert log.parent == sphere_home / "logs" and log.is_file()
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "InputDataError" in text
    assert re.match(r"sphere-\d{8}-\d{6}-\d+\.log$", log.name)


def test_store_failure_is_exit_3_and_its_password_stays_out_of_the_log(sphere_home, capsys):
    url = "postgresql://nobody:hunter2@127.0.0.1:1/none"
    code, _, err = run_cli(capsys, "runs", "--database-url", url)
    assert code == 3
    line = one_line(err)
    assert line.startswith("error: cannot connect to database") and "hunter2" not in line
    text = logged_at(line, "log:").read_text()
    assert "runs --database-url postgresql://nobody:***@127.0.0.1:1/none" in text
    assert "hunter2" not in text


def test_unusable_home_is_exit_3_and_writes_nothing(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home-file"
    home.write_text("not a directory")
    monkeypatch.setenv("SPHERE_HOME", str(home))
    code, out, err = run_cli(capsys, "runs")
    assert code == 3 and out == ""
    assert one_line(err) == f"error: SPHERE_HOME {home} is a file, not a directory"
    monkeypatch.setenv("SPHERE_HOME", str(home / "sub"))
    code, _, err = run_cli(capsys, "config", "show")
    assert code == 3 and "cannot be created: a parent of it is a file" in one_line(err)


def test_an_unexpected_exception_is_internal_error_70(sphere_home, capsys, monkeypatch):
    fail_with(monkeypatch, lambda: ZeroDivisionError("division by zero\nsecond line"))
    code, out, err = run_cli(capsys, "config", "show")
    assert code == 70 and out == ""
    line = one_line(err)
    assert line.startswith(
        "internal error: ZeroDivisionError: division by zero; second line (traceback in "
    )
    text = logged_at(line, "traceback in").read_text()
    assert "Traceback (most recent call last)" in text and "def broken" not in text
    assert "raise exc_factory()" in text


def test_a_user_error_inside_an_exception_group_keeps_its_code(sphere_home, capsys, monkeypatch):
    fail_with(monkeypatch, lambda: ExceptionGroup("tasks", [StoreError("database is gone")]))
    code, _, err = run_cli(capsys, "config", "show")
    assert code == 3 and one_line(err).startswith("error: database is gone (log: ")


def test_keyboard_interrupt_is_130_and_names_the_run_to_resume(sphere_home, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        announce_run("run-x1")
        raise KeyboardInterrupt

    monkeypatch.setattr(config_cmds, "resolve_config", interrupted)
    code, out, err = run_cli(capsys, "config", "show")
    assert code == 130 and out == "run id: run-x1\n"
    line = one_line(err)
    assert line.startswith(
        "interrupted (SIGINT); run run-x1 stopped, continue it with `sphere resume run-x1` (log: "
    )


def test_sigterm_during_a_command_is_143_and_handlers_are_restored(
    sphere_home, capsys, monkeypatch
):
    monkeypatch.setenv("SPHERE_TERM_GRACE_S", "60")
    before = signal.getsignal(signal.SIGTERM)
    root_handlers = list(logging.getLogger().handlers)

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr(config_cmds, "resolve_config", killed)
    began = time.monotonic()
    code, _, err = run_cli(capsys, "config", "show")
    assert code == 143 and time.monotonic() - began < 4
    line = one_line(err)
    assert line.startswith("terminated (SIGTERM) (log: ")
    assert "Terminated: terminated by SIGTERM" in logged_at(line, "log:").read_text()
    assert signal.getsignal(signal.SIGTERM) is before
    # the same handlers as before (a displaced console handler is re-added at the end)
    assert set(logging.getLogger().handlers) == set(root_handlers)


def test_a_terminated_exception_is_143(sphere_home, capsys, monkeypatch):
    fail_with(monkeypatch, Terminated)
    code, _, err = run_cli(capsys, "config", "show")
    assert code == 143 and one_line(err).startswith("terminated (SIGTERM)")


def test_prefect_console_output_is_routed_to_the_log_file(sphere_home, capsys, monkeypatch):
    """Prefect's console handler is set aside while a command runs: its ERROR records (flow and
    task failures with tracebacks) reach the log file only, WARNING records one line each."""
    from prefect.logging.handlers import PrefectConsoleHandler

    root = logging.getLogger()
    prefect_console = PrefectConsoleHandler()
    root.addHandler(prefect_console)

    def noisy(*args, **kwargs):
        try:
            raise RuntimeError("task exploded")
        except RuntimeError:
            logging.getLogger("prefect.task_runs").exception("Task run failed")
        logging.getLogger("prefect.flow_runs").warning("no preference pairs\nwere produced")
        logging.getLogger("sphere_core.search").debug("debug detail for the file")
        raise InputDataError("data/q.jsonl: no rows")

    monkeypatch.setattr(config_cmds, "resolve_config", noisy)
    try:
        code, out, err = run_cli(capsys, "config", "show")
        assert prefect_console in root.handlers  # given back
    finally:
        root.removeHandler(prefect_console)
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "warning: no preference pairs; were produced",
        err.splitlines()[-1],
    ]
    line = err.splitlines()[-1]
    assert line.startswith("error: data/q.jsonl: no rows (log: ")
    text = logged_at(line, "log:").read_text()
    assert "Task run failed" in text and "RuntimeError: task exploded" in text
    assert "debug detail for the file" in text and "no preference pairs" in text


def test_one_log_file_per_invocation_and_only_the_newest_are_kept(sphere_home, capsys):
    logs = sphere_home / "logs"
    logs.mkdir()
    gone_pid = 99_999_999  # above any pid_max: no such process
    for i in range(KEEP_LOGS + 10):
        old = logs / f"sphere-20200101-0000{i:02d}-{gone_pid}.log"
        old.write_text("old")
        os.utime(old, (1_600_000_000 + i, 1_600_000_000 + i))
    running = logs / f"sphere-20190101-000000-{os.getppid()}.log"  # a command still running
    running.write_text("a long run")
    os.utime(running, (1_500_000_000, 1_500_000_000))
    (logs / "notes.txt").write_text("not a log")
    assert main(["config", "show"]) == 0
    kept = sorted(p.name for p in logs.glob("sphere-*.log") if p != running)
    assert len(kept) == KEEP_LOGS and running.exists()  # 49 newest old ones + the new one
    assert f"sphere-20200101-000011-{gone_pid}.log" in kept
    assert f"sphere-20200101-000010-{gone_pid}.log" not in kept
    assert (logs / "notes.txt").exists()
    assert main(["config", "show"]) == 0
    assert len(list(logs.glob("sphere-*.log"))) == KEEP_LOGS + 1


def test_main_leaves_no_prefect_environment_behind(sphere_home, capsys, monkeypatch):
    for key in ("PREFECT_LOGGING_LEVEL", "PREFECT_LOCAL_STORAGE_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_SERVER_LOGGING_LEVEL", "DEBUG")
    seen = {}

    def look(*args, **kwargs):
        seen.update(
            {
                k: os.environ.get(k)
                for k in (
                    "PREFECT_LOGGING_LEVEL",
                    "PREFECT_LOCAL_STORAGE_PATH",
                    "PREFECT_SERVER_LOGGING_LEVEL",
                )
            }
        )
        raise InputDataError("stop here")

    monkeypatch.setattr(config_cmds, "resolve_config", look)
    assert main(["config", "show"]) == 1
    assert seen == {
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_LOCAL_STORAGE_PATH": str(sphere_home / "prefect" / "storage"),
        "PREFECT_SERVER_LOGGING_LEVEL": "DEBUG",
    }  # the user's setting wins
    assert (
        "PREFECT_LOGGING_LEVEL" not in os.environ and "PREFECT_LOCAL_STORAGE_PATH" not in os.environ
    )
    assert os.environ["PREFECT_SERVER_LOGGING_LEVEL"] == "DEBUG"


HUNG_CLEANUP = """
import sys, time
from flows.commands import config_cmds
from flows.cli import main

def hang(*args, **kwargs):
    try:
        print("ready", flush=True)
        time.sleep(60)
    except KeyboardInterrupt:  # a cleanup that never finishes
        time.sleep(60)

config_cmds.resolve_config = hang
sys.exit(main(["config", "show"]))
"""


@pytest.mark.parametrize(
    ("grace", "signals", "expect"),
    [
        ("1", 1, "terminated (SIGTERM); shutdown took longer than 1 s, stopped it"),
        ("60", 2, "terminated (SIGTERM twice), stopped without cleanup"),  # at once
    ],
)
def test_a_hung_shutdown_still_exits_143(sphere_home, grace, signals, expect):
    env = {**os.environ, "SPHERE_TERM_GRACE_S": grace, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HUNG_CLEANUP],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        began = time.monotonic()
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 143 and time.monotonic() - began < 10
    assert "Traceback" not in err
    assert one_line(err) == expect
