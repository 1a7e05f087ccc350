"""`sphere --help` is fast, names the embedded models and the exit codes, and needs no home;
importing the CLI and the flows package has no side effects (no prefect/torch import, no
environment change); `configure_prefect_env` is the explicit step that sets Prefect defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from flows.cli import main
from flows.prefect_env import DEFAULTS, configure_prefect_env
from tests.conftest import REPO_ROOT

PROBE = """
import json, os, sys, time
before = {k: v for k, v in os.environ.items() if k.startswith("PREFECT_")}
t0 = time.perf_counter()
import flows, flows.prefect_env, flows.cli
elapsed = time.perf_counter() - t0
after = {k: v for k, v in os.environ.items() if k.startswith("PREFECT_")}
heavy = sorted(
    m for m in ("torch", "prefect", "transformers", "pandas", "sqlalchemy") if m in sys.modules
)
print(json.dumps({"elapsed": elapsed, "heavy": heavy, "env_changed": before != after}))
"""


def test_importing_the_cli_is_light_and_changes_nothing():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["env_changed"] is False
    assert result["elapsed"] < 2.0


def test_help_names_the_embedded_models_and_exit_codes(tmp_path, capsys, monkeypatch):
    home = tmp_path / "never-created"
    monkeypatch.setenv("SPHERE_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "`embedded` = Qwen2.5-Coder-0.5B-Instruct, the policy default" in text
    assert "`embedded-small` = SmolLM2-135M-Instruct, the fast small model" in text
    assert "SmolLM2-135M model" not in text  # the old "demo runs on SmolLM2" claim
    assert "130 interrupted, 143 terminated" in text and "$SPHERE_HOME/logs/" in text
    assert main([]) == 0  # no arguments: the same help, exit 0
    assert "Usage: sphere" in capsys.readouterr().out
    assert not home.exists()  # help needs no home and writes no log


def test_serve_is_registered_from_serve_cmds():
    from flows.cli import build_command

    assert build_command().commands["serve"].callback.__module__ == "flows.commands.serve_cmds"


def test_configure_prefect_env_sets_defaults_without_overriding(tmp_path, monkeypatch):
    for key in list(DEFAULTS) + ["PREFECT_LOCAL_STORAGE_PATH"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    applied = configure_prefect_env(tmp_path)
    assert os.environ["PREFECT_LOGGING_LEVEL"] == "DEBUG" and "PREFECT_LOGGING_LEVEL" not in applied
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["PREFECT_LOCAL_STORAGE_PATH"] == str(tmp_path / "prefect" / "storage")
    assert set(applied) == set(DEFAULTS) - {"PREFECT_LOGGING_LEVEL"} | {
        "PREFECT_LOCAL_STORAGE_PATH"
    }
    assert configure_prefect_env(tmp_path) == {}  # idempotent
