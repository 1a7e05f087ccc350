"""Paired statistics against hand-computed values: exact McNemar, paired bootstrap CI, the join
of two models' records on question id, and format failures."""

from __future__ import annotations

import pandas as pd
import pytest

from sphere_core.evaluation.paired_stats import (
    PairedComparison,
    compare_items,
    mcnemar_exact,
    paired_bootstrap_ci,
)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 5, 0.21875),  # 2 * (C(6,0) + C(6,1)) / 2**6 = 14/64
        (5, 1, 0.21875),  # symmetric
        (0, 6, 0.03125),  # 2 / 64
        (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 1024
        (0, 1, 1.0),  # 2 * 1/2 = 1
        (3, 3, 1.0),  # b == c: capped at 1
        (0, 0, 1.0),  # no discordant pair
        (0, 20, 2 / 2**20),
    ],
)
def test_mcnemar_exact_hand_computed(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12, abs=0)


def test_mcnemar_exact_large_counts_stay_finite():
    p = mcnemar_exact(400, 600)
    assert 0 < p < 1e-9  # 1000 discordant pairs, 40 % vs 60 %: far from chance
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_bootstrap_ci_small_case_with_fixed_seed():
    # one question of four flips wrong->right: diff 0.25. A resample's mean diff is k/4 with
    # k ~ Bin(4, 1/4): P(k=0)=0.316 > 2.5 %, P(k<=2)=0.949 < 97.5 % <= P(k<=3)=0.996.
    a, b = [1, 0, 0, 1], [1, 1, 0, 1]
    low, high = paired_bootstrap_ci(a, b, n_boot=10000, seed=0)
    assert (low, high) == (0.0, 0.75)
    assert low <= 0.25 <= high
    assert paired_bootstrap_ci(a, b, n_boot=10000, seed=0) == (low, high)  # seeded: reproducible


def test_bootstrap_ci_is_degenerate_when_all_pairs_agree():
    assert paired_bootstrap_ci([1, 0, 1, 1, 0], [1, 0, 1, 1, 0], n_boot=500, seed=3) == (0.0, 0.0)
    assert paired_bootstrap_ci([0, 0, 0], [1, 1, 1], n_boot=500, seed=3) == (1.0, 1.0)


def test_bootstrap_ci_level_and_bad_input():
    a = [0] * 30 + [1] * 30
    b = [1] * 20 + [0] * 10 + [1] * 30
    wide = paired_bootstrap_ci(a, b, n_boot=4000, seed=1, level=0.99)
    narrow = paired_bootstrap_ci(a, b, n_boot=4000, seed=1, level=0.5)
    assert wide[0] < narrow[0] <= 20 / 60 <= narrow[1] < wide[1]  # diff: 20 of 60 flip to right
    for bad in (
        {"a": [], "b": []},
        {"a": [1], "b": [1, 0]},
        {"a": [1], "b": [1], "level": 1.0},
        {"a": [1], "b": [1], "n_boot": 0},
    ):
        with pytest.raises(ValueError):
            paired_bootstrap_ci(**bad)


def _items(bench, rows):
    """rows: (question_id, correct_1, extracted_1)."""
    return pd.DataFrame(
        [
            {"benchmark": bench, "question_id": q, "correct_1": c, "extracted_1": e}
            for q, c, e in rows
        ]
    )


def test_compare_items_joins_on_common_questions_per_benchmark():
    base = pd.concat(
        [
            _items(
                "gsm8k",
                [
                    ("q1", True, "1"),
                    ("q2", False, "5"),
                    ("q3", False, None),
                    ("q4", True, "4"),
                    ("q5", False, ""),
                ],
            ),
            _items("math500", [("m1", True, "x")]),
            _items("aime24", [("a1", True, "3")]),  # the trained model did not answer aime24
        ]
    )
    trained = pd.concat(
        [
            _items(
                "gsm8k",
                [
                    ("q1", False, "7"),
                    ("q2", True, "2"),
                    ("q3", True, "3"),
                    ("q4", True, "4"),
                    ("q9", True, "9"),
                ],
            ),  # q5 missing, q9 extra
            _items("math500", [("m1", True, "x"), ("m2", False, None)]),
        ]
    )
    result = compare_items(base, trained, label_a="base", label_b="trained", n_boot=2000, seed=7)
    assert [r.benchmark for r in result] == ["gsm8k", "math500"]
    gsm = result[0]
    assert isinstance(gsm, PairedComparison)
    assert (gsm.n, gsm.right_to_wrong, gsm.wrong_to_right) == (4, 1, 2)  # q1..q4 only
    assert gsm.pass_a == 0.5 and gsm.pass_b == 0.75 and gsm.diff == pytest.approx(0.25)
    assert gsm.p_mcnemar == 1.0  # 2 * (1 + 3) / 8, capped
    assert gsm.ci_low <= gsm.diff <= gsm.ci_high
    assert gsm.format_fail_a == 0.25 and gsm.format_fail_b == 0.0  # q3 has no answer; q5 not joined
    assert (gsm.n_boot, gsm.seed, gsm.level) == (2000, 7, 0.95)
    math = result[1]
    assert (math.n, math.diff, math.ci_low, math.ci_high, math.p_mcnemar) == (1, 0.0, 0.0, 0.0, 1.0)
    d = gsm.as_dict()
    assert d["label_a"] == "base" and d["label_b"] == "trained" and d["format_fail_a"] == 0.25


def test_compare_items_without_extracted_column_reports_na_and_no_overlap_gives_nothing():
    old = pd.DataFrame(
        {
            "benchmark": ["gsm8k"] * 3,
            "question_id": ["1", "2", "3"],
            "correct_1": [True, False, True],
        }
    )  # an old record without extracted_1
    new = _items("gsm8k", [("1", True, None), ("2", True, "2"), ("3", True, "3")])
    (row,) = compare_items(old, new, label_a="old", label_b="new", n_boot=100)
    assert row.format_fail_a is None and row.format_fail_b == pytest.approx(1 / 3)
    assert (row.right_to_wrong, row.wrong_to_right) == (0, 1)
    other = _items("gsm8k", [("7", True, "7")])
    assert compare_items(old, other, label_a="old", label_b="other") == []
    with pytest.raises(ValueError, match="correct_1"):
        compare_items(old.drop(columns="correct_1"), new, label_a="x", label_b="y")


def test_compare_items_question_ids_compare_as_text_and_repeat_once():
    a = pd.DataFrame(
        {"benchmark": ["b"] * 3, "question_id": [1, 2, 2], "correct_1": [True, False, True]}
    )
    b = pd.DataFrame(
        {"benchmark": ["b"] * 2, "question_id": ["1", "2"], "correct_1": [False, False]}
    )
    (row,) = compare_items(a, b, label_a="a", label_b="b", n_boot=50)
    assert row.n == 2 and row.right_to_wrong == 1 and row.wrong_to_right == 0  # q2: first record
