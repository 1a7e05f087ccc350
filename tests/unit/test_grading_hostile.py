"""Grading under hostile input: linear-time extraction of 84 KB+ adversarial texts, the whole
grading of an item (extraction included) under the per-item timeout, strict extraction for
routing, has_final_answer, and answers stated in prose."""

from __future__ import annotations

import json
import time

import pytest

from flows.cli import main
from sphere_core.errors import GradingError
from sphere_core.grading import (
    MAX_ANSWER_CHARS,
    Grader,
    extract_answer,
    grade_file,
    has_final_answer,
    last_boxed,
)
from sphere_core.grading import item as item_module
from tests.unit.test_grading_doubles import slow_verify

# Each about 84 KB or more; the quadratic extractor took 34 s on the first one.
ADVERSARIAL = {
    "nested unclosed boxes": "\\boxed{" * 12_000,
    "nested closed boxes": "\\boxed{" * 11_000 + "7" + "}" * 11_000,
    "unclosed boxes with content": "\\boxed{1 " * 10_000,
    "bare boxes": "\\boxed " * 13_000,
    "fbox then spaces": "\\fbox " + " " * 90_000,
    "long digit run": "1" * 90_000,
    "long digit run then a letter": "1" * 90_000 + "x",
    "thousands groups": "1" + ",234" * 22_000 + "5x",
    "many Final Answer markers": "Final Answer: " * 7_000,
    "many echoed template sentences": "Final Answer: The final answer is $answer$. " * 2_000,
    "marker then whitespace": "Final Answer:" + " " * 90_000,
    "many I-hope starts": "The final answer is " + "I " * 45_000,
    "unclosed inline math": "The final answer is " + "\\(" * 45_000,
    "dollars": "$" * 90_000,
    "escaped dollars": "Final Answer: $" + "\\$" * 45_000,
    "backslashes": "\\" * 90_000,
    "open braces": "{" * 90_000,
    "close braces": "}" * 90_000,
    "prose words": "Final Answer: The final answer is " + "word " * 18_000,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_extraction_is_fast(name):
    text = ADVERSARIAL[name]
    assert len(text) >= 84_000
    start = time.perf_counter()
    for fallback in ("last_number", "none"):
        answer = extract_answer(text, fallback=fallback)
        assert answer is None or len(answer) <= MAX_ANSWER_CHARS
    has_final_answer(text)
    last_boxed(text)
    assert time.perf_counter() - start < 1.0, name  # was 34 s (quadratic) for 84 KB


def test_adversarial_extraction_answers():
    assert extract_answer(ADVERSARIAL["nested closed boxes"]) == "7"
    assert extract_answer(ADVERSARIAL["nested unclosed boxes"]) is None
    assert extract_answer(ADVERSARIAL["long digit run"]) is None  # 90,000 digits: not an answer
    assert extract_answer("1" * 90_000 + " so 12") == "12"
    assert extract_answer(ADVERSARIAL["many echoed template sentences"], fallback="none") is None
    big = "Step.\n\n" * 12_000 + "Final Answer: The final answer is $18$. I hope it is correct."
    assert len(big) > 84_000 and extract_answer(big) == "18"
    many = "Final Answer: The final answer is $1$. I hope it is correct.\n" * 1_500
    assert len(many) > 84_000 and extract_answer(many + "\\boxed{5} and 6") == "1"


# -- answers stated in prose, \( \) math, strictness ----------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            (
                "Final Answer: The final answer is The total number of sides is 8. I hope it is "
                "correct."
            ),
            "8",
        ),
        ("The final answer is: The total number of sides is 8.", "8"),
        ("Final Answer: The final answer is 8 sides. I hope it is correct.", "8"),
        ("Final Answer: The final answer is The probability is 3/4.", "3/4"),
        ("Final Answer: The final answer is the total is $8$ dollars.", "8"),
        ("Final Answer: The final answer is $The total is 8$. I hope it is correct.", "8"),
        ("The final answer is 10 square units", "10"),
        ("Therefore, the total cost is \\(\\boxed{920}\\) dollars.", "920"),
        (
            "Final Answer: The final answer is \\(\\boxed{920}\\) dollars. I hope it is correct.",
            "920",
        ),
        ("Final Answer: The final answer is \\(920\\). I hope it is correct.", "920"),
        ("Final Answer: The final answer is \\(920\\) dollars.", "920"),
        ("The final answer is \\[ \\boxed{920} \\]", "920"),
        ("Final Answer: The final answer is $$x = 5$$", "x = 5"),
        # math expressions and one-word answers are not prose
        ("Final Answer: The final answer is Evelyn.", "Evelyn"),
        ("Final Answer: The final answer is No solution.", "No solution"),
        ("Final Answer: The final answer is x^2 + 7x + 10.", "x^2 + 7x + 10"),
        ("The final answer is sin(x) + cos(x)", "sin(x) + cos(x)"),
        ("Final Answer: The final answer is $\\text{(C)}$.", "\\text{(C)}"),
        ("The final answer is 2ab", "2ab"),
    ],
)
def test_prose_and_inline_math_answers(text, expected):
    assert extract_answer(text) == expected
    assert extract_answer(text, fallback="none") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Final Answer: The final answer is $18$. I hope it is correct.", True),
        ("so the answer is \\boxed{18}", True),
        ("Final answer: 7", True),
        ("so the answer is 42", False),
        ("\\boxed{}", False),
        ("\\boxed{  }", False),
        ("an unclosed \\boxed{18", False),
        ("Final Answer: The final answer is $answer$. I hope it is correct.", False),
        ("", False),
        (None, False),
    ],
)
def test_has_final_answer(text, expected):
    assert has_final_answer(text) is expected


# -- the whole item under the timeout ------------------------------------------------------
@pytest.fixture(scope="module")
def double_grader():
    with Grader(timeout_s=1.0, workers=1, verify_fn=slow_verify, warmup=None) as g:
        yield g


def sentence(answer: str) -> str:
    return f"Work.\n\nFinal Answer: The final answer is ${answer}$. I hope it is correct."


def test_grade_texts_strict_override(double_grader):
    texts = ["so the answer is 42", sentence("42"), "we get \\boxed{42}", "nothing"]
    golds = ["42"] * 4
    assert double_grader.grade_texts(texts, golds) == [
        ("42", True),
        ("42", True),
        ("42", True),
        (None, False),
    ]
    assert double_grader.grade_texts(texts, golds, fallback="none") == [
        (None, False),
        ("42", True),
        ("42", True),
        (None, False),
    ]
    assert double_grader.fallback == "last_number"  # the override is per call
    with pytest.raises(GradingError, match="fallback"):
        double_grader.grade_texts(texts, golds, fallback="first_number")


def test_extraction_runs_in_the_worker_not_the_caller(double_grader, monkeypatch):
    def caller_side(*_args, **_kwargs):
        raise AssertionError("extraction ran in the calling process")

    monkeypatch.setattr(item_module, "extract_answer", caller_side)
    monkeypatch.setattr("sphere_core.grading.grader.extract_answer", caller_side)
    verdicts = double_grader.grade_texts_detailed([sentence("a"), sentence("b")], ["A", "X"])
    assert [(v.extracted, v.status) for v in verdicts] == [("a", "verified"), ("b", "mismatch")]


def test_hang_is_caught_by_the_item_timeout_and_extraction_is_included(double_grader):
    texts = [sentence("hang"), *ADVERSARIAL.values(), sentence("a")]
    golds = ["A"] * len(texts)
    start = time.monotonic()
    verdicts = double_grader.grade_texts_detailed(texts, golds)
    elapsed = time.monotonic() - start
    assert verdicts[0].status == "timeout" and not verdicts[0].correct
    assert verdicts[-1].status == "verified" and verdicts[-1].extracted == "a"
    statuses = {v.status for v in verdicts[1:-1]}
    assert statuses <= {"no_answer", "mismatch"}, statuses  # none timed out, none errored
    assert elapsed < 20  # one 1 s timeout + a worker restart + 19 fast 84 KB items


def test_grade_file_reports_elapsed_and_timeouts(tmp_path, double_grader):
    path = tmp_path / "preds.jsonl"
    rows = [
        {"prediction": sentence("a"), "answer": "A"},
        {"prediction": sentence("hang"), "answer": "A"},
        {"prediction": "\\boxed{" * 12_000, "answer": "A"},
        {"prediction": sentence("hang"), "answer": "B"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start = time.monotonic()
    res = grade_file(path, double_grader)
    wall = time.monotonic() - start
    summary = res.summary()
    assert summary["timeouts"] == 2 and summary["correct"] == 1 and summary["graded"] == 4
    assert 2.0 <= summary["elapsed_s"] <= wall + 0.01  # two 1 s timeouts are in it
    graded = [json.loads(x) for x in res.graded_file.read_text().splitlines()]
    assert [r["status"] for r in graded] == ["verified", "timeout", "no_answer", "timeout"]
    assert "within 1s" in graded[1]["error"]


def test_cli_grade_prints_elapsed_and_timeouts(tmp_path, sphere_home, capsys):
    path = tmp_path / "preds.jsonl"
    rows = [
        {"prediction": sentence("18"), "answer": "18"},
        {"prediction": "\\boxed{" * 12_000, "answer": "3"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["grade", str(path), "--format", "json", "--set", "grading.timeout_s=2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["timeouts"] == 0 and summary["timeout_s"] == 2.0
    assert summary["elapsed_s"] > 0 and summary["correct"] == 1
    assert main(["grade", str(path), "--set", "grading.timeout_s=2"]) == 0
    out = capsys.readouterr().out
    assert "0 timed out after 2s each" in out and "s elapsed" in out
