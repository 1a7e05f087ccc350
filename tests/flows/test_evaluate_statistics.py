"""`sphere evaluate --run` through the evaluate flow prints base-vs-trained paired statistics
(table and ``--format json``), computed from the per-item files the flow wrote. A scripted
generator double answers differently as the "trained" model, so the counts are known."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from sphere_core.backends.registry import register_generator
from tests.fakes import FakeGenerator, write_fake_questions


class FlipGenerator(FakeGenerator):
    """The scripted fake; a model whose path names 'trained' answers as the fake's [bad] sample
    (right on 'inverted', wrong on 'contrastive'); no final answer on 'noanswer' either way."""

    name = "fake-flip"

    def _step(self, scenario, answer, context, depth, i):
        return super()._step(scenario, answer, context, depth, i + ("trained" in self.path))


register_generator("fake-flip", lambda spec, home: FlipGenerator(spec.path))

SETS = [
    "--set",
    "models.policy.backend=fake-flip",
    "--set",
    "models.policy.path=fake-base",
    "--set",
    "grading.workers=1",
    "--set",
    "evaluation.self_correction=false",
    "--set",
    "evaluation.bootstrap_samples=1000",
    "--set",
    "evaluation.bootstrap_seed=3",
]


def test_evaluate_prints_paired_statistics(prefect_api, sphere_home, tmp_path, capsys):
    questions = write_fake_questions(
        tmp_path / "five.jsonl",
        ["contrastive", "contrastive", "contrastive", "inverted", "noanswer"],
    )
    args = [
        "evaluate",
        "--run",
        "ev1",
        "--model",
        "fake-trained",
        "--benchmark-file",
        str(questions),
        *SETS,
    ]
    assert main([*args, "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)  # stdout holds the JSON only
    assert payload["run_id"] == "ev1" and {r["model_label"] for r in payload["rows"]} == {
        "base",
        "trained",
    }
    (c,) = payload["comparisons"]
    assert (c["benchmark"], c["label_a"], c["label_b"], c["n"]) == ("five", "base", "trained", 5)
    assert (c["pass_a"], c["pass_b"], c["right_to_wrong"], c["wrong_to_right"]) == (0.6, 0.2, 3, 1)
    assert c["p_mcnemar"] == pytest.approx(0.625)  # 2 * (1 + 4) / 16
    assert c["format_fail_a"] == c["format_fail_b"] == pytest.approx(0.2)
    assert c["diff"] == pytest.approx(-0.4) and c["ci_low"] <= c["diff"] <= c["ci_high"]
    assert (c["n_boot"], c["seed"]) == (1000, 3)
    pass1 = {r["model_label"]: r["value"] for r in payload["rows"] if r["metric"] == "pass@1"}
    assert pass1 == {"base": c["pass_a"], "trained": c["pass_b"]}

    assert main(args) == 0  # reuses the evaluations; the table this time
    text = capsys.readouterr().out
    assert "Base vs trained" in text and "-40.0 [" in text and "0.625" in text and "20.0%" in text


def test_evaluate_json_of_one_model_has_no_comparison(prefect_api, sphere_home, tmp_path, capsys):
    questions = write_fake_questions(tmp_path / "two.jsonl", ["contrastive", "inverted"])
    assert (
        main(
            [
                "evaluate",
                "--model",
                "fake-trained",
                "--benchmark-file",
                str(questions),
                *SETS,
                "-f",
                "json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert payload["comparisons"] == [] and {r["model_label"] for r in payload["rows"]} == {
        "fake-trained"
    }
    assert main(["evaluate", "--model", "fake-trained", "-f", "yaml"]) == 2


@pytest.mark.slow
def test_evaluate_statistics_on_a_real_tiny_model(prefect_api, sphere_home, capsys):
    """SmolLM2-135M as both base and "trained" model (same weights: one evaluation, reused):
    the statistics come from real graded answers and must show two identical models."""
    from sphere_core.backends.cache import clear_caches

    clear_caches()
    sets = [
        "models.policy.path=embedded-small",
        "evaluation.max_new_tokens=48",
        "evaluation.self_correction=false",
        "grading.workers=1",
    ]
    args = [
        "evaluate",
        "--run",
        "real1",
        "--model",
        "embedded-small",
        "-b",
        "gsm8k",
        "-n",
        "2",
        *[a for s in sets for a in ("--set", s)],
        "-f",
        "json",
    ]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    payload = json.loads(captured.out)
    (c,) = payload["comparisons"]
    assert (c["benchmark"], c["n"], c["diff"], c["right_to_wrong"], c["wrong_to_right"]) == (
        "gsm8k",
        2,
        0.0,
        0,
        0,
    )
    assert (c["ci_low"], c["ci_high"], c["p_mcnemar"]) == (0.0, 0.0, 1.0)
    assert c["pass_a"] == c["pass_b"] and c["format_fail_a"] == c["format_fail_b"]
    pass1 = {r["model_label"]: r["value"] for r in payload["rows"] if r["metric"] == "pass@1"}
    assert pass1 == {"base": c["pass_a"], "trained": c["pass_b"]}
