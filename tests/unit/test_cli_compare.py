"""`sphere compare RUN_A RUN_B` on fabricated evaluation items: the trained models of two runs
and each with its base, paired over common questions, with hand-computed statistics; and the
one-line errors with their exit codes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flows.cli import main
from tests.support.eval_items import write_items

T, F = True, False
BASE = [T, T, T, F, F, F, F, F, F, F]  # 3/10
TRAINED_A = [T, T, F, T, T, T, T, T, F, F]  # 7/10: q3 right->wrong, q4..q8 wrong->right
TRAINED_B = [T, T, T, T, F, F, F, F, F, F]  # 4/10: q4 wrong->right


@pytest.fixture
def two_runs(sphere_home):
    write_items(sphere_home, "sphere1", "base", "gsm8k", BASE)
    write_items(sphere_home, "sphere1", "trained", "gsm8k", TRAINED_A)
    write_items(sphere_home, "sphere1", "base", "math500", [T, F], ids=["m1", "m2"])
    write_items(sphere_home, "sphere1", "trained", "math500", [T, T], ids=["m1", "m2"])
    write_items(sphere_home, "sampling1", "base", "gsm8k", BASE)
    # one more question (q11) that run A did not evaluate; q10 without a parsable answer
    write_items(sphere_home, "sampling1", "trained", "gsm8k", TRAINED_B + [T], no_answer=(9,))
    return sphere_home


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_compare_json_has_every_pair_with_hand_computed_statistics(two_runs, capsys):
    assert (
        main(
            [
                "compare",
                "sphere1",
                "sampling1",
                "--format",
                "json",
                "--set",
                "evaluation.bootstrap_samples=2000",
                "--set",
                "evaluation.bootstrap_seed=5",
            ]
        )
        == 0
    )
    payload = _json(capsys)
    assert (payload["run_a"], payload["run_b"], payload["round"]) == ("sphere1", "sampling1", 1)
    rows = {(r["label_a"], r["label_b"], r["benchmark"]): r for r in payload["comparisons"]}
    assert list(rows) == [
        ("sphere1/base", "sphere1/trained", "gsm8k"),
        ("sphere1/base", "sphere1/trained", "math500"),
        ("sampling1/base", "sampling1/trained", "gsm8k"),
        ("sphere1/trained", "sampling1/trained", "gsm8k"),  # math500: run B did not evaluate it
    ]
    a = rows[("sphere1/base", "sphere1/trained", "gsm8k")]
    assert (a["n"], a["pass_a"], a["pass_b"], a["right_to_wrong"], a["wrong_to_right"]) == (
        10,
        0.3,
        0.7,
        1,
        5,
    )
    assert a["diff"] == pytest.approx(0.4) and a["p_mcnemar"] == pytest.approx(0.21875)
    assert a["ci_low"] <= 0.4 <= a["ci_high"] and (a["n_boot"], a["seed"], a["level"]) == (
        2000,
        5,
        0.95,
    )
    assert a["format_fail_a"] == 0.0 and a["format_fail_b"] == 0.0
    b = rows[("sampling1/base", "sampling1/trained", "gsm8k")]
    assert (b["n"], b["right_to_wrong"], b["wrong_to_right"], b["p_mcnemar"]) == (10, 0, 1, 1.0)
    assert b["format_fail_b"] == pytest.approx(0.1)  # q10 of 10 joined questions
    x = rows[("sphere1/trained", "sampling1/trained", "gsm8k")]
    assert (x["n"], x["pass_a"], x["pass_b"], x["right_to_wrong"], x["wrong_to_right"]) == (
        10,
        0.7,
        0.4,
        4,
        1,
    )
    assert x["diff"] == pytest.approx(-0.3) and x["p_mcnemar"] == pytest.approx(0.375)  # 2*(1+5)/32
    assert x["ci_low"] <= -0.3 <= x["ci_high"] < 0.3


def test_compare_same_seed_same_interval_and_table_output(two_runs, capsys):
    assert main(["compare", "sphere1", "sampling1", "-f", "json"]) == 0
    first = _json(capsys)["comparisons"]
    assert main(["compare", "sphere1", "sampling1", "-f", "json"]) == 0
    assert _json(capsys)["comparisons"] == first
    assert first[0]["n_boot"] == 10000 and first[0]["seed"] == 0  # config defaults
    assert main(["compare", "sphere1", "sampling1"]) == 0
    text = capsys.readouterr().out
    assert "sphere1 vs sampling1 (round 1)" in text
    assert "+40.0 [" in text and "-30.0 [" in text and "0.219" in text and "0.375" in text
    assert "10.0%" in text  # run B's share of answers without a parsable final answer


def test_compare_later_round_and_old_items_without_extracted_answers(sphere_home, capsys):
    for run, correct in (("r1", TRAINED_A), ("r2", TRAINED_B)):
        path = write_items(sphere_home, run, "trained", "gsm8k", correct, round=2)
        pd.read_parquet(path).drop(columns="extracted_1").to_parquet(path, index=False)
    (sphere_home / "runs" / "r1" / "eval").mkdir()  # round 1 has no evaluation
    assert main(["compare", "r1", "r2", "--round", "2", "-f", "json"]) == 0
    (row,) = _json(capsys)["comparisons"]  # no base evaluated: only trained vs trained
    assert row["format_fail_a"] is None and row["format_fail_b"] is None
    assert main(["compare", "r1", "r2", "--round", "2"]) == 0
    assert "n/a" in capsys.readouterr().out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_compare_errors_are_one_line_with_exit_codes(two_runs, capsys):
    assert main(["compare", "sphere1", "nosuchrun"]) == 1
    assert "unknown run 'nosuchrun'" in _one_line_error(capsys)
    (two_runs / "runs" / "empty1").mkdir()
    assert main(["compare", "sphere1", "empty1"]) == 1
    line = _one_line_error(capsys)
    assert "'empty1'" in line and "no evaluation of its trained model" in line
    assert main(["compare", "sphere1", "sampling1", "--round", "3"]) == 1
    assert "no round 3" in _one_line_error(capsys)
    write_items(two_runs, "other1", "trained", "gsm8k", [T, F], ids=["z1", "z2"])
    assert main(["compare", "sphere1", "other1"]) == 1
    assert "no evaluated question in common" in _one_line_error(capsys)
    damaged = two_runs / "runs" / "sampling1" / "eval" / "base" / "gsm8k.parquet"
    damaged.write_bytes(b"PAR1 not really")
    assert main(["compare", "sphere1", "sampling1"]) == 1
    assert f"cannot read evaluation items {damaged}" in _one_line_error(capsys)
    assert main(["compare", "sphere1", "sampling1", "--format", "csv"]) == 2
    assert "--format" in _one_line_error(capsys)
    assert main(["compare", "../x", "sampling1"]) == 2
    assert "run id" in _one_line_error(capsys)
