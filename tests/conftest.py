"""Shared fixtures.

``sphere_home``: a fresh $SPHERE_HOME per test whose ``models/`` links to one session-wide
directory, so the embedded model is converted from its GGUF once per test session.
``home_store``: the store of that home.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
