"""The routing decision table of each stage, one branch per test, with reasons and evidence."""

from __future__ import annotations

from sphere_core.routing import GradedPath, error_row
from sphere_core.schemas import ROUTING_COLUMNS
from sphere_core.stages import get_stage
from sphere_core.stages.base import StageItem


def _route(stage: str, best: GradedPath, worst: GradedPath, context: str | None = None) -> dict:
    item = StageItem("q", "problem", "42", [], context)
    return get_stage(stage).route("r", item, best, worst)


def route_stage1(run_id, qid, gold, best, worst):
    return _route("stage1", best, worst)


def route_stage2(run_id, qid, gold, best, worst, source):
    return _route("stage2", best, worst, source)


def route_stage3(run_id, qid, gold, best, worst, chosen):
    return _route("stage3", best, worst, chosen)


RIGHT = GradedPath("... Final Answer: 42", "42", True, 0.9)
WRONG = GradedPath("... Final Answer: 43", "43", False, 0.2)
NONE = GradedPath("no answer here", None, False, 0.1)


def _s1(best, worst):
    return route_stage1("r", "q", "42", best, worst)


def test_stage1_branches():
    assert _s1(RIGHT, WRONG)["decision"] == "pair"
    assert _s1(WRONG, RIGHT)["decision"] == "pair_inverted"
    assert _s1(WRONG, NONE)["decision"] == "to_correction"
    assert _s1(RIGHT, RIGHT)["decision"] == "to_diversity"


def test_rows_carry_evidence_and_a_sentence():
    row = _s1(WRONG, NONE)
    assert list(row) == ROUTING_COLUMNS
    assert (row["answer_max"], row["answer_min"], row["correct_max"], row["correct_min"]) == (
        "43",
        None,
        False,
        False,
    )
    assert (row["reward_max"], row["reward_min"]) == (0.2, 0.1)
    assert "no final answer" in row["reason"] and row["reason"].endswith(".")
    assert row["error"] is None


def test_stage2_branches_keep_the_source_solution():
    ok = route_stage2("r", "q", "42", RIGHT, WRONG, "old wrong")
    assert ok["decision"] == "pair" and ok["source_solution"] == "old wrong"
    assert "Sol_min^SC" in ok["reason"]
    both = route_stage2("r", "q", "42", RIGHT, RIGHT, "old wrong")
    assert both["decision"] == "pair" and "original wrong solution" in both["reason"]
    assert route_stage2("r", "q", "42", WRONG, RIGHT, "x")["decision"] == "pair_inverted"
    assert route_stage2("r", "q", "42", WRONG, NONE, "x")["decision"] == "unresolved"


def test_stage3_branches():
    assert route_stage3("r", "q", "42", RIGHT, WRONG, "s1 max")["decision"] == "pair"
    assert route_stage3("r", "q", "42", WRONG, RIGHT, "s1 max")["decision"] == "pair"
    row = route_stage3("r", "q", "42", RIGHT, RIGHT, "s1 max")
    assert row["decision"] == "no_error" and row["source_solution"] == "s1 max"


def test_error_row_keeps_the_message():
    row = error_row("r", "q", "stage2", "GenerationError: boom")
    assert row["decision"] == "error" and row["error"] == "GenerationError: boom"
    assert "boom" in row["reason"] and row["correct_max"] is None
