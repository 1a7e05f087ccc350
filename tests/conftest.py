"""Shared fixtures.

``sphere_home``: a fresh $SPHERE_HOME per test whose ``models/`` links to one session-wide
directory, so the embedded model is converted from its GGUF once per test session.
``home_store``: the store of that home.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(autouse=True)
def _sigint_raises_keyboard_interrupt():
    """Each test starts with Python's SIGINT default (KeyboardInterrupt), as in a terminal: a test
    run started as a background job (`pytest ... &` in a script) inherits SIGINT ignored, and a
    library may put that inherited disposition back; tests that send SIGINT to this process (or
    check that an ignored one stays ignored) set what they need themselves."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def session_models_dir(tmp_path_factory) -> Path:
    cached = os.environ.get("SPHERE_TEST_MODELS")
    if cached:
        path = Path(cached)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def sphere_home(tmp_path, session_models_dir, monkeypatch) -> Path:
    home = tmp_path / "sphere_home"
    home.mkdir()
    (home / "models").symlink_to(session_models_dir, target_is_directory=True)
    monkeypatch.setenv("SPHERE_HOME", str(home))
    monkeypatch.delenv("SPHERE_DATABASE_URL", raising=False)
    return home


@pytest.fixture
def home_store(sphere_home):
    """The store of the test's $SPHERE_HOME (its default SQLite database), opened and closed."""
    from sphere_core.storage.repo import open_repository

    with open_repository(home=sphere_home) as store:
        yield store


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """Session-wide Prefect test harness (temporary API + SQLite, ~7 s); yields its API URL."""
    from flows.prefect_env import configure_prefect_env

    configure_prefect_env()
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield PREFECT_API_URL.value()


SHIPPED_DATA = (
    REPO_ROOT / "sphere_core" / "data" / "benchmarks",
    REPO_ROOT / "sphere_core" / "data" / "builtin",
)


class ShippedData:
    """``shipped_data / "math500.jsonl"``: a data file the repository ships (the packaged benchmarks
    and builtin question sets, verbatim copies of the project's source data)."""

    def __truediv__(self, name: str) -> Path:
        for folder in SHIPPED_DATA:
            if (folder / name).is_file():
                return folder / name
        raise FileNotFoundError(f"{name} is not shipped in {', '.join(map(str, SHIPPED_DATA))}")


@pytest.fixture(scope="session")
def shipped_data() -> ShippedData:
    return ShippedData()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The original data files in ../shared/data; only for tests marked ``needs_shared``."""
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    skip_shared = pytest.mark.skip(reason=f"needs_shared: {SHARED} is not present")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "needs_shared" in item.keywords and not SHARED.is_dir():
            item.add_marker(skip_shared)


def pytest_terminal_summary(terminalreporter):
    """Count the tests that need ../shared, so a fresh clone sees what it did not run."""
    marked = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if "needs_shared" in getattr(r, "keywords", {})
    ]
    if marked:
        terminalreporter.write_line(
            f"{len(marked)} test(s) marked needs_shared skipped: {SHARED} is not present"
        )
