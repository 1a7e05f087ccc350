"""Flow-test fixtures: a question file scripting every routing path, and a helper running
``sphere`` in a subprocess against the session's Prefect harness API (``prefect_api`` in
tests/conftest.py; no extra ephemeral server start per process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import write_fake_questions
from tests.flows.orch_fakes import SCENARIO_MIX

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def questions_file(tmp_path) -> Path:
    return write_fake_questions(tmp_path / "questions.jsonl", SCENARIO_MIX)


def sphere_cli(
    args: list[str], home: Path, api_url: str, env: dict[str, str] | None = None, wait: bool = True
) -> subprocess.CompletedProcess | subprocess.Popen:
    """``sphere ARGS`` in a subprocess with the orchestration fakes registered."""
    code = (
        "import sys, tests.flows.orch_fakes; from flows.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    full_env = {
        **os.environ,
        "SPHERE_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
        ),
    }
    full_env.pop("SPHERE_DATABASE_URL", None)
    cmd = [sys.executable, "-c", code, *args]
    if not wait:
        return subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    return subprocess.run(
        cmd, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=300, check=False
    )
