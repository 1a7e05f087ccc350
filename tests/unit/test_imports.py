"""Every library module imports on its own: no import cycle, no missing name.

An import cycle only breaks when the cycle is entered from one particular module, so each
module is imported first thing in a fresh child process (forked from a parent that has loaded
the third-party libraries but no ``sphere_core`` module). The backend registry table is
checked the same way: importing the module it names registers the name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sphere_core",)

CHILD = r"""
import importlib, json, os, sys, traceback
for lib in ("numpy", "pandas", "pyarrow", "pyarrow.parquet", "pydantic", "yaml", "sqlalchemy",
            "httpx"):
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
assert not any(m == "sphere_core" or m.startswith("sphere_core.") for m in sys.modules)


def start(name):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            msg = b""
        except BaseException:
            msg = traceback.format_exc().encode()
        os.write(w, msg[-4000:])
        os._exit(0)
    os.close(w)
    return pid, r


failures, pending = {}, list(json.loads(sys.argv[1]))
while pending:
    batch = [(name, start(name)) for name in pending[: max(2, os.cpu_count() or 1)]]
    pending = pending[len(batch):]
    for name, (pid, r) in batch:
        with os.fdopen(r, "rb") as fh:
            out = fh.read()
        os.waitpid(pid, 0)
        if out:
            failures[name] = out.decode(errors="replace")
print(json.dumps(failures))
"""
# Run by alembic only (``context.config`` exists inside a migration run).
NOT_IMPORTABLE_ALONE = {"sphere_core.storage.migrations.env"}


def library_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if name not in NOT_IMPORTABLE_ALONE:
                names.append(name)
    return names


def _import_each(names: list[str]) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(names)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # about a second per module on a loaded 2-core machine
def test_every_library_module_imports_first_in_a_fresh_process():
    names = library_modules()
    assert "sphere_core.config" in names and "sphere_core.storage.keys" in names
    failures = _import_each(names)
    assert not failures, "\n\n".join(f"{m}:\n{tb}" for m, tb in failures.items())


def test_the_child_reports_a_broken_module(tmp_path, monkeypatch):
    """The check can fail: a module with a cycle through its own package is reported."""
    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclepkg.b import B\nA = 1\n")
    (pkg / "b.py").write_text("from cyclepkg.a import A\nB = 2\n")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(["cyclepkg.a"])],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "ImportError" in failures["cyclepkg.a"]


def test_each_builtin_backend_module_registers_its_names():
    from sphere_core.backends.registry import BUILTIN_BACKENDS

    check = (
        "import importlib, sys\n"
        "from sphere_core.backends import registry\n"
        f"for (kind, name), module in {sorted(BUILTIN_BACKENDS.items())!r}:\n"
        "    importlib.import_module(module)\n"
        "    assert name in registry._REGISTRIES[kind], (kind, name, module)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
