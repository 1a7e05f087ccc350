"""Names that become paths cannot leave their directory; user-chosen directories are checked
for being writable (sphere_core.paths)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sphere_core.errors import EXIT_INFRA, EXIT_USAGE, HomeError, InvalidNameError
from sphere_core.paths import named_dir, run_dir, validate_name, writable_dir

GOOD = ["run-20250101-120000-ab12", "a", "A.b_c-1", "ref", "x" * 128, "v1.2"]
BAD = [
    "../x",
    "../../x",
    "..",
    ".",
    "/tmp/x",
    "a/b",
    "a\\b",
    "",
    " ",
    "a b",
    "a\x00b",
    "run\n",
    "x" * 129,
    ".hidden",
    "-rf",
    "a..b",
    "ｒun",  # fullwidth r
    "rսn",  # Armenian 'u' lookalike
    "caf\u00e9",
    "~",
    "$HOME",
    None,
    42,
]


@pytest.mark.parametrize("value", GOOD)
def test_safe_names_pass_unchanged(value):
    assert validate_name(value) == value


@pytest.mark.parametrize("value", BAD)
def test_unsafe_names_raise_one_line_naming_what_and_value(value):
    with pytest.raises(InvalidNameError) as info:
        validate_name(value, what="model label")
    message = str(info.value)
    assert message.startswith("invalid model label ") and "\n" not in message
    assert len(message) < 250  # a 129-char value is shortened, not echoed whole
    assert info.value.exit_code == EXIT_USAGE == 2


@pytest.mark.parametrize("value", ["../../x", "/tmp/x", "..", ""])
def test_run_dir_refuses_traversal(tmp_path, value):
    with pytest.raises(InvalidNameError, match="invalid run id"):
        run_dir(tmp_path, value)


def test_run_dir_is_under_runs(tmp_path):
    assert run_dir(tmp_path, "r1") == tmp_path / "runs" / "r1"


def test_a_symlinked_name_pointing_outside_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "home" / "runs").mkdir(parents=True)
    (tmp_path / "home" / "runs" / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidNameError, match="outside"):
        run_dir(tmp_path / "home", "evil")


def test_a_symlinked_runs_dir_is_followed(tmp_path):
    """A home whose runs/ lives on another disk is fine: names stay inside that runs/."""
    disk = tmp_path / "disk" / "runs"
    disk.mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "runs").symlink_to(disk, target_is_directory=True)
    assert run_dir(tmp_path / "home", "r1").resolve() == disk / "r1"


def test_named_dir_validates_with_its_label(tmp_path):
    with pytest.raises(InvalidNameError, match="invalid report name '../r'"):
        named_dir(tmp_path, "../r", "report name")


def test_writable_dir_creates_missing_parents(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    assert writable_dir(target, "--out") == target and target.is_dir()
    assert list(target.iterdir()) == []  # the write probe is gone


def test_writable_dir_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(HomeError, match=r"^SPHERE_HOME .*/f is a file, not a directory$") as info:
        writable_dir(tmp_path / "f", "SPHERE_HOME")
    assert info.value.exit_code == EXIT_INFRA == 3


def test_writable_dir_refuses_a_path_below_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(HomeError, match="cannot be created: a parent of it is a file"):
        writable_dir(tmp_path / "f" / "sub", "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_writable_dir_refuses_a_read_only_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        with pytest.raises(HomeError, match="is not writable"):
            writable_dir(ro, "SPHERE_HOME")
        with pytest.raises(HomeError, match="cannot be created"):
            writable_dir(ro / "sub", "SPHERE_HOME")
    finally:
        ro.chmod(0o700)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs")
def test_writable_dir_refuses_a_dir_nobody_may_write(tmp_path):
    """sysfs refuses new files even to root: the probe write, not the mode bits, decides."""
    with pytest.raises(HomeError, match="is not writable|cannot be created"):
        writable_dir(Path("/sys/kernel"), "SPHERE_HOME")
