"""How `sphere` ends, seen from outside: SIGTERM and SIGINT stop `sphere serve` and a long
`sphere generate` cleanly (exit 143 / 130 within seconds, one line on stderr, the traceback in
the log file, the run record no longer `running`), a failing flow run ends with its one
`error:` line, not Prefect's tracebacks, and a flow (as a deployment runs it) refuses a run id
that would leave the home before it writes anything.

Subprocesses run the real CLI against the session's Prefect test harness (``sphere_cli``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sphere_core.storage.repo import open_repository
from tests.flows.conftest import sphere_cli
from tests.flows.orch_fakes import fake_overrides

pytestmark = pytest.mark.slow

FINAL_PREFIXES = ("error:", "internal error:", "terminated", "interrupted")


class Reader:
    """Collects a pipe's lines in a thread, so a test can wait for a line without blocking."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.time() + timeout
        while not any(text in line for line in self.lines):
            assert proc.poll() is None, f"exited {proc.returncode} before printing {text!r}"
            assert time.time() < deadline, f"no {text!r} within {timeout} s: {self.lines}"
            time.sleep(0.1)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(self.lines)


def start(args: list[str], home: Path, api: str, env: dict[str, str] | None = None):
    proc = sphere_cli(args, home, api, env, wait=False)
    return proc, Reader(proc.stdout), Reader(proc.stderr)


def stop(proc: subprocess.Popen, signum: int, timeout: float = 60) -> float:
    """Send ``signum`` to the CLI process only; returns the seconds until it exited."""
    began = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running {timeout} s after {signal.Signals(signum).name}")
    return time.monotonic() - began


def final_line(stderr: str) -> str:
    """The one error/termination line: exactly one such line, the last, and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    finals = [ln for ln in lines if ln.startswith(FINAL_PREFIXES)]
    assert len(finals) == 1 and lines[-1] == finals[0], stderr[-3000:]
    return finals[0]


def wait_for_first_shard(home: Path, proc: subprocess.Popen, err: Reader, timeout: float) -> None:
    """Wait until a stage-1 routing shard is written (the run is under way) while `proc` lives."""
    deadline = time.time() + timeout
    while not list((home / "artifacts" / "stage1_routing").glob("*/part-*.parquet")):
        assert proc.poll() is None, err.text()[-3000:]
        assert time.time() < deadline, "no stage-1 shard appeared"
        time.sleep(0.1)


def log_of(line: str) -> Path:
    assert "(log: " in line, line
    return Path(line.rsplit("(log: ", 1)[1].rstrip(")"))


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [
        (signal.SIGTERM, 143, "terminated (SIGTERM)"),
        (signal.SIGINT, 130, "interrupted (SIGINT)"),
    ],
)
def test_serve_stops_cleanly(prefect_api, tmp_path, signum, code, word):
    proc, out, err = start(["serve"], tmp_path / "home", prefect_api)
    out.wait_for("serving deployments", proc, timeout=120)
    time.sleep(2)  # the runner is polling
    took = stop(proc, signum)
    assert proc.returncode == code, err.text()[-3000:]
    assert took < 15
    line = final_line(err.text())
    assert line.startswith(word)
    assert log_of(line).is_file()


def _slow_generate(tmp_path: Path, questions_file: Path, api: str, run_id: str):
    sets = [
        arg for o in fake_overrides(questions_file, backend="fake-slow") for arg in ("--set", o)
    ]
    home = tmp_path / "home"
    proc, out, err = start(
        ["generate", "--run-id", run_id, *sets], home, api, {"SPHERE_FAKE_DELAY_S": "0.3"}
    )
    wait_for_first_shard(home, proc, err, timeout=120)
    return home, proc, out, err


def test_sigterm_stops_a_long_generate_with_one_line(prefect_api, tmp_path, questions_file):
    home, proc, out, err = _slow_generate(tmp_path, questions_file, prefect_api, "sigterm-a")
    took = stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, err.text()[-3000:]
    assert took < 30
    line = final_line(err.text())
    assert line.startswith("terminated (SIGTERM)")
    log = log_of(line)
    assert log.parent == home / "logs" and "Terminated" in log.read_text()
    assert "run id: sigterm-a" in out.text()
    with open_repository(None, home) as repo:
        assert repo.get_run("sigterm-a")["status"] != "completed"


def test_sigterm_marks_the_run_cancelled_and_resume_finishes_it(
    prefect_api, tmp_path, questions_file
):
    home, proc, _, err = _slow_generate(tmp_path, questions_file, prefect_api, "sigterm-b")
    stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, err.text()[-3000:]
    with open_repository(None, home) as repo:
        assert repo.get_run("sigterm-b")["status"] == "cancelled"
    resumed = sphere_cli(["resume", "sigterm-b"], home, prefect_api, {"SPHERE_FAKE_DELAY_S": "0"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open_repository(None, home) as repo:
        assert repo.get_run("sigterm-b")["status"] == "completed"


def test_a_failing_flow_run_prints_one_error_line_not_prefect_tracebacks(prefect_api, tmp_path):
    home = tmp_path / "home"
    sets = [arg for o in fake_overrides(tmp_path / "missing.jsonl") for arg in ("--set", o)]
    proc = sphere_cli(["generate", "--run-id", "doomed", *sets], home, prefect_api)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = final_line(proc.stderr)
    assert proc.stderr.strip() == line  # nothing else on stderr
    assert line.startswith("error: ") and "missing.jsonl" in line
    log = log_of(line)
    assert log.parent == home / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "prefect.flow_runs" in text


@pytest.mark.parametrize("bad", ["../x", "/tmp/sphere-escape-x", ".."])
def test_a_flow_refuses_a_run_id_that_leaves_the_home(prefect_api, tmp_path, monkeypatch, bad):
    """The path a deployment parameter takes: the flow itself validates before writing."""
    from flows.pipeline import pipeline_flow
    from sphere_core.errors import InvalidNameError

    home = tmp_path / "home"
    monkeypatch.setenv("SPHERE_HOME", str(home))
    monkeypatch.delenv("SPHERE_DATABASE_URL", raising=False)
    with pytest.raises(InvalidNameError, match="invalid run id"):
        pipeline_flow(run_id=bad, preset="demo")
    assert not home.exists() and not (tmp_path / "x").exists()
    assert not Path("/tmp/sphere-escape-x").exists()


def _children(pid: int) -> dict[int, str]:
    """{pid: command line} of the live child processes of ``pid``."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(stat.parent.name)] = cmdline
    return found


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.2)
    return False


def _generate_on_a_local_api(tmp_path: Path, questions_file: Path):
    """`sphere generate` (slow fakes) in its own process group with no PREFECT_API_URL, as a user
    starts it in a terminal; returns (home, process, stderr reader, the API server's pid) once
    a stage-1 shard is written."""
    from tests.flows.conftest import REPO_ROOT

    home = tmp_path / "home"
    env = {
        **os.environ,
        "SPHERE_HOME": str(home),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SPHERE_FAKE_DELAY_S": "0.3",
        "PYTHONPATH": str(REPO_ROOT),
    }
    for key in ("PREFECT_API_URL", "SPHERE_DATABASE_URL"):
        env.pop(key, None)
    code = "import sys, tests.flows.orch_fakes; from flows.cli import main; sys.exit(main())"
    sets = [a for o in fake_overrides(questions_file, backend="fake-slow") for a in ("--set", o)]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "generate", "--run-id", "local-api", *sets],
        cwd=REPO_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the terminal's foreground process group
    )
    err = Reader(proc.stderr)
    Reader(proc.stdout)
    wait_for_first_shard(home, proc, err, timeout=240)
    servers = [pid for pid, cmd in _children(proc.pid).items() if "flows.local_api" in cmd]
    assert len(servers) == 1, _children(proc.pid)
    assert os.getsid(servers[0]) != os.getsid(proc.pid)  # out of reach of the group's Ctrl-C
    return home, proc, err, servers[0]


def test_ctrl_c_without_an_api_url_stops_within_seconds_and_stops_the_local_server(
    tmp_path, questions_file
):
    """Ctrl-C goes to the whole foreground process group; the command's temporary Prefect API
    server is not in it, so the interrupted run's state updates still reach it: exit 130 within
    seconds with one line, and the server stops with the command."""
    home, proc, err, server = _generate_on_a_local_api(tmp_path, questions_file)
    began = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    took = time.monotonic() - began
    assert proc.returncode == 130, err.text()[-3000:]
    assert took < 20, err.text()[-3000:]
    assert final_line(err.text()).startswith("interrupted (SIGINT); run local-api stopped")
    assert _gone(server, timeout=15)
    with open_repository(None, home) as repo:
        assert repo.get_run("local-api")["status"] == "cancelled"


def test_the_local_server_stops_when_its_command_is_killed(tmp_path, questions_file):
    _, proc, _, server = _generate_on_a_local_api(tmp_path, questions_file)
    os.killpg(proc.pid, signal.SIGKILL)  # no atexit, no handler: the server must notice
    proc.wait()
    assert _gone(server, timeout=15)
