"""A run id from the command line cannot leave $SPHERE_HOME: every command parameter that
becomes a directory name is validated while the command line is parsed (exit 2, one line,
nothing written outside the home)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.cli import NAME_PARAMS, build_command, main
from sphere_core.errors import InvalidNameError


def tree_snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if "sphere_home" not in p.parts}


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--run-id", "../../x"],
        ["generate", "--run-id", "{outside}"],
        ["run", "--run-id", "../x", "--preset", "demo"],
        ["resume", "../x"],
        ["resume", "{outside}"],
        ["train", "--run", "/tmp/x"],
        ["train", "--run", "{outside}"],
        ["report", "--run", ".."],
        ["evaluate", "--run", "../x"],
        ["routes", "--run", "a/../../b"],
        ["generate", "--run-id", "run\x00x"],
        ["generate", "--run-id", "ｒun-1"],
        ["generate", "--run-id", "r" * 200],
        ["generate", "--run-id", ""],
    ],
)
def test_unsafe_run_ids_are_refused_before_anything_runs(sphere_home, tmp_path, capsys, argv):
    outside = tmp_path / "outside-target"
    argv = [a.replace("{outside}", str(outside)) for a in argv]
    before = tree_snapshot(tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: invalid run id "), captured.err
    assert captured.out == ""
    assert tree_snapshot(tmp_path) == before  # nothing next to the home
    assert not outside.exists() and not Path("/tmp/x/questions.parquet").exists()
    assert not (sphere_home / "runs").exists()  # refused before any command code ran


def test_every_run_id_parameter_of_every_command_is_checked():
    """A command added later with a --run/--run-id option is covered too."""
    checked = []

    def walk(command, path):
        for param in getattr(command, "params", []):
            if param.name in NAME_PARAMS:
                with pytest.raises(InvalidNameError):
                    param.callback(None, param, "../escape")
                assert param.callback(None, param, None) is None
                checked.append((path, param.name))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(build_command(), "sphere")
    names = {path for path, _ in checked}
    assert {
        "sphere generate",
        "sphere run",
        "sphere resume",
        "sphere train",
        "sphere report",
        "sphere evaluate",
        "sphere routes",
    } <= names


def test_a_valid_run_id_passes_through(sphere_home, capsys):
    """`routes --run` with a safe but unknown id reaches the command (not found: exit 1)."""
    code = main(["routes", "--run", "run-20250101-000000-abcd"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown run 'run-20250101-000000-abcd'" in err
    assert os.path.isdir(sphere_home)
