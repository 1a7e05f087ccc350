"""Reading a run for the report: a store or artifact that cannot be read (I/O, a damaged file,
a store error) is an "unreadable part"; a bug in the code (KeyError, TypeError) propagates."""

from __future__ import annotations

import pytest

from sphere_core.errors import StoreError
from sphere_core.evaluation.report import build_report
from sphere_core.evaluation.report.loading import load_run


class Store:
    """A store whose ``routes_for_run`` raises ``error`` (the other queries return nothing)."""

    def __init__(self, error: Exception):
        self.error = error

    def get_run(self, run_id: str) -> dict:
        return {
            "run_id": run_id,
            "status": "completed",
            "kind": "pipeline",
            "rounds": 1,
            "round": 1,
            "config": {},
        }

    def routes_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        raise self.error

    def pairs_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        return []

    def evaluations_for_run(self, run_id: str, round: int | None = None) -> list[dict]:
        return []


def test_a_store_error_is_an_unreadable_part(tmp_path):
    run = load_run(tmp_path, "r1", Store(StoreError("database is locked")))
    assert run.problems == ["cannot read the store's routes of run r1: database is locked"]
    text = build_report("r1", tmp_path, Store(StoreError("database is locked"))).read_text()
    assert "> **Unreadable parts:** cannot read the store's routes of run r1" in text


@pytest.mark.parametrize("bug", [KeyError("decision"), TypeError("unhashable type: 'list'")])
def test_a_bug_propagates(tmp_path, bug):
    with pytest.raises(type(bug)):
        build_report("r1", tmp_path, Store(bug))
    assert not (tmp_path / "runs" / "r1" / "report.md").exists()
