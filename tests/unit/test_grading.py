"""Grading: answer extraction, exact-match fast path, math-verify equivalence on real answer
styles, the per-item timeout pool, get_grader and `sphere grade`."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from flows.cli import main
from sphere_core.config import GradingConfig
from sphere_core.errors import GradingError
from sphere_core.grading import Grader, extract_answer, get_grader, grade_file, normalize_answer
from sphere_core.grading.grader import close_graders
from tests.unit.test_grading_doubles import slow_verify


def paper_sentence(answer: str) -> str:
    return f"Step 1: work.\n\nFinal Answer: The final answer is ${answer}$. I hope it is correct."


# -- extraction ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Final Answer: The final answer is $18$. I hope it is correct.", "18"),
        ("Final Answer: The final answer is 18. I hope it is correct.", "18"),
        ("so\nThe final answer is 18.", "18"),
        ("The final answer is 18.\nMore text 99", "18"),
        ("Final Answer: The final answer is \\boxed{18}. I hope it is correct.", "18"),
        (
            "Final Answer: The final answer is $\\boxed{\\frac{1}{2}}$. I hope it is correct.",
            "\\frac{1}{2}",
        ),
        ("Final Answer: The final answer is $\\$32,348$. I hope it is correct.", "\\$32,348"),
        (
            "Final Answer: The final answer is $\\left( 3, \\frac{\\pi}{2} \\right)$.",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
        ),
        (
            "Final Answer: The final answer is $(-\\infty, 0) \\cup\\{1\\}$.",
            "(-\\infty, 0) \\cup\\{1\\}",
        ),
        ("Final answer: 7", "7"),
        (
            (
                "The final answer is $1$. I hope it is correct.\n\n"
                "The final answer is $2$. I hope it is correct."
            ),
            "2",
        ),
        ("First \\boxed{1}, then \\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
        ("\\boxed{1} and finally \\fbox{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("so the answer is \\boxed 5$", "5"),
        ("last \\boxed{3} then broken \\boxed{4", "3"),
        ("She has 1,234 apples and gives 2 away, leaving 1,232.", "1232"),
        ("The value is -3.5 units", "-3.5"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_fallback_and_template_echo():
    assert extract_answer("no final answer but 42 apples", fallback="none") is None
    assert extract_answer("no final answer but 42 apples") == "42"
    assert (
        extract_answer(
            "Final Answer: The final answer is $answer$. I hope it is correct.", fallback="none"
        )
        is None
    )
    assert extract_answer("nothing numeric here") is None
    assert extract_answer("") is None and extract_answer(None) is None
    with pytest.raises(ValueError, match="fallback"):
        extract_answer("1", fallback="first_number")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("18.00", "18"),
        ("$2,125$", "2125"),
        (" 3.50 ", "3.5"),
        ("\\$32,348", "32348"),
        ("18.", "18"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ],
)
def test_normalize_answer_equal(a, b):
    assert normalize_answer(a) == normalize_answer(b)


def test_normalize_answer_keeps_different_answers_apart():
    assert normalize_answer("69,84") != normalize_answer("6984")
    assert normalize_answer("180") != normalize_answer("18")
    assert normalize_answer("1.05") != normalize_answer("1.5")


# -- math-verify on real answer styles ------------------------------------------------------
@pytest.fixture(scope="module")
def grader():
    # The process-wide instance (as `sphere grade` uses): its workers start once for this module.
    return get_grader(GradingConfig())


def _real_golds(shipped_data) -> list[str]:
    """A spread of real gold answers: GSM8K ints, MATH-500 LaTeX, OlympiadBench multi-answers,
    AIME."""

    def rows(name):
        with (shipped_data / name).open() as fh:
            return [json.loads(line)["answer"] for line in fh]

    math500, olymp = rows("math500.jsonl"), rows("olympiadbench.jsonl")
    picks = rows("gsm8k_test.jsonl")[:4] + rows("aime24.jsonl")[:2] + rows("amc23.jsonl")[:2]
    for pattern in (
        "\\left(",
        "\\frac",
        "\\text{(",
        "\\sqrt",
        "\\pi",
        "[",
        "\\infty",
        "^\\circ",
        "x",
    ):
        picks.append(next(a for a in math500 if pattern in a and a not in picks))
    picks += [a for a in olymp if "," in a and "\\" not in a][:2]
    picks += [a for a in olymp if "\\" in a and "," not in a][:2]
    return picks


def test_real_gold_answers_in_paper_sentence_verify(grader, shipped_data):
    golds = _real_golds(shipped_data)
    assert "\\left( 3, \\frac{\\pi}{2} \\right)" in golds and any("\\text{(" in g for g in golds)
    results = grader.grade_texts([paper_sentence(g) for g in golds], golds)
    assert [ext for ext, _ in results] == golds
    assert all(ok for _, ok in results), [g for g, (_, ok) in zip(golds, results) if not ok]


def test_perturbed_answers_do_not_verify(grader, shipped_data):
    golds = _real_golds(shipped_data)
    shifted = golds[1:] + golds[:1]  # each gold checked against a different real answer
    assert [v.status for v in grader.verify_detailed(shifted, golds)] == ["mismatch"] * len(golds)
    numeric = [g for g in golds if g.isdigit()]
    assert not any(grader.verify([str(int(g) + 1) for g in numeric], numeric))


def test_equivalent_forms_verify(grader):
    preds = [
        "0.5",
        "\\dfrac{14}{3}",
        "(3, \\pi/2)",
        "84, 69",
        "C",
        "[-2, 7)",
        "18.00",
        "2,125",
        None,
    ]
    golds = [
        "\\frac{1}{2}",
        "\\frac{14}{3}",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        "69,84",
        "\\text{(C)}",
        "[-2,7)",
        "18",
        "2125",
        "5",
    ]
    verdicts = grader.verify_detailed(preds, golds)
    assert [v.correct for v in verdicts] == [True] * 8 + [False]
    assert verdicts[6].status == "exact" and verdicts[7].status == "exact"  # fast path, no pool
    assert verdicts[0].status == "verified" and verdicts[-1].status == "no_answer"
    near_misses = ["(3, \\pi/3)", "[-2, 7]", "D", "84"]
    assert grader.verify(near_misses, [golds[2], golds[5], golds[4], golds[3]]) == [False] * 4


def test_verify_works_from_threads(grader):
    # math-verify's SIGALRM timeout fails outside the main thread; the pool must not care.
    with ThreadPoolExecutor(max_workers=2) as ex:
        futures = [ex.submit(grader.verify, ["\\frac{2}{4}"], ["0.5"]) for _ in range(3)]
        assert all(f.result() == [True] for f in futures)


def test_length_mismatch_is_an_error(grader):
    with pytest.raises(GradingError, match="one gold answer per prediction"):
        grader.verify(["1", "2"], ["1"])


# -- the timeout pool -----------------------------------------------------------------------
def test_timeout_item_counts_wrong_and_pool_recovers():
    with Grader(timeout_s=1.0, workers=1, verify_fn=slow_verify, warmup=None) as g:
        start = time.monotonic()
        verdicts = g.verify_detailed(["a", "hang", "b", "hang", "c"], ["A", "A", "B", "B", "X"])
        elapsed = time.monotonic() - start
        assert [v.correct for v in verdicts] == [True, False, True, False, False]
        assert [v.status for v in verdicts] == [
            "verified",
            "timeout",
            "verified",
            "timeout",
            "mismatch",
        ]
        assert g.timeouts == 2 and g._pool.replaced == 2
        assert elapsed < 20  # two 1 s timeouts plus two worker restarts, never the 60 s sleep
        assert g.verify(["d"], ["D"]) == [True]  # the replaced pool keeps working


def test_error_and_dead_worker_are_reported_not_raised():
    with Grader(timeout_s=5.0, workers=2, verify_fn=slow_verify, warmup=None) as g:
        verdicts = g.verify_detailed(["boom", "crash", "e"], ["X", "X", "E"])
        assert [v.status for v in verdicts] == ["error", "error", "verified"]
        assert "bad expression" in verdicts[0].detail and "died" in verdicts[1].detail
        assert g.errors == 2


def test_close_stops_workers_and_a_closed_grader_restarts_them():
    g = Grader(timeout_s=5.0, workers=2, verify_fn=slow_verify, warmup=None)
    g.verify(["a", "b"], ["A", "B"])
    procs = [w.proc for w in g._pool._pool]
    assert len(procs) == 2 and all(p.poll() is None for p in procs)
    g.close()
    assert all(p.poll() is not None for p in procs)
    assert g.verify(["c"], ["C"]) == [True]
    g.close()


# -- sphere grade --------------------------------------------------------------------------
def test_grade_file_and_cli(tmp_path, sphere_home, capsys):
    path = tmp_path / "preds.jsonl"
    lines = [
        json.dumps({"id": "q1", "prediction": paper_sentence("18"), "answer": "18"}),
        json.dumps(
            {"id": "q2", "prediction": paper_sentence("\\frac{28}{6}"), "answer": "\\frac{14}{3}"}
        ),
        json.dumps({"id": "q3", "prediction": "so the answer is 17", "answer": 18}),
        json.dumps({"id": "q4", "answer": "1"}),
        "{not json",
        json.dumps(
            {"id": "q6", "prediction": "Final Answer: The final answer is $1$.", "answer": ""}
        ),
    ]
    path.write_text("\n".join(lines) + "\n")
    assert main(["grade", str(path), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {
        **summary,
        "total_rows": 6,
        "graded": 3,
        "correct": 2,
        "errors": 3,
        "timeouts": 0,
    }
    assert summary["accuracy"] == pytest.approx(2 / 3)
    graded = [json.loads(x) for x in (tmp_path / "preds.graded.jsonl").read_text().splitlines()]
    assert [r["row"] for r in graded] == [1, 2, 3, 4, 5, 6]
    assert [r["correct"] for r in graded] == [True, True, False, False, False, False]
    assert [r["extracted"] for r in graded[:3]] == ["18", "\\frac{28}{6}", "17"]
    assert graded[0]["id"] == "q1" and "prediction" in graded[3]["error"]
    assert graded[3]["id"] == "q4"  # error rows keep their input fields
    assert graded[4]["error"].startswith("malformed JSON")

    assert main(["grade", str(path)]) == 0
    captured = capsys.readouterr()
    assert "accuracy 66.7%" in captured.out and "row 4" in captured.err

    res = grade_file(path, get_grader(GradingConfig()), tmp_path / "other.jsonl")
    assert res.graded_file.name == "other.jsonl" and res.correct == 2


def test_cli_grade_no_gradable_rows(tmp_path, sphere_home, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text(json.dumps({"prediction": "1"}) + "\n")
    assert main(["grade", str(path), "--format", "json"]) != 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["graded"] == 0
    assert "no gradable rows" in captured.err
    assert main(["grade", str(tmp_path / "missing.jsonl")]) != 0
    assert "missing.jsonl" in capsys.readouterr().err


# runs last: close_graders() drops the shared instance used above
def test_get_grader_is_process_wide(grader):
    assert get_grader(GradingConfig()) is grader
    other = get_grader(GradingConfig(timeout_s=3, fallback="none"))
    assert other is not grader and other.timeout_s == 3 and other.fallback == "none"
    with pytest.raises(GradingError, match="fallback"):
        Grader(fallback="nope")
    close_graders()
    assert get_grader(GradingConfig()) is not grader
    close_graders()
