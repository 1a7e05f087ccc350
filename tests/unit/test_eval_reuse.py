"""One model's evaluation on one question set is computed once: a resumed run or a second run
with the same base model reuses it, and anything that changes the result (weights, adapter
content, questions, settings) evaluates again."""

from __future__ import annotations

import pandas as pd

from sphere_core.evaluation.model_specs import model_spec
from sphere_core.evaluation.runner import evaluate_model
from sphere_core.storage.keys import eval_key, weights_fingerprint
from tests.fakes import FakeGenerator, fake_config


def _calls() -> int:
    return sum(len(g.calls) for g in FakeGenerator.instances)


def _run(cfg, spec, home, out_dir=None, limit=2, bench="gsm8k"):
    return evaluate_model(cfg, "base", spec, bench, limit, home=home, out_dir=out_dir)


def test_a_finished_evaluation_is_reused_with_identical_results(sphere_home, tmp_path):
    cfg = fake_config("evaluation.limit=2")
    spec = cfg.models.policy
    items, summary = _run(cfg, spec, sphere_home, tmp_path / "first")
    before = _calls()
    assert before > 0
    again, summary_again = _run(cfg, spec, sphere_home, tmp_path / "second")
    assert _calls() == before  # no generation at all
    pd.testing.assert_frame_equal(
        again.reset_index(drop=True), items.reset_index(drop=True), check_dtype=False
    )
    pd.testing.assert_frame_equal(summary_again, summary, check_dtype=False)
    assert (
        tmp_path / "second" / "base" / "gsm8k.parquet"
    ).is_file()  # the run view still gets its file


def test_what_changes_the_result_evaluates_again(sphere_home, tmp_path):
    cfg = fake_config()
    spec = cfg.models.policy
    _run(cfg, spec, sphere_home)
    for changed_cfg, changed_spec, limit in (
        (fake_config("evaluation.max_new_tokens=7"), spec, 2),  # a setting
        (fake_config("evaluation.self_correction=false"), spec, 2),
        (cfg, spec.model_copy(update={"path": "fake-policy-2"}), 2),  # other weights
        (cfg, spec, 3),  # other questions
    ):
        before = _calls()
        _run(changed_cfg, changed_spec, sphere_home, limit=limit)
        assert _calls() > before


def test_an_adapter_is_identified_by_its_content(tmp_path):
    cfg = fake_config()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(b"a" * 64)
    spec = model_spec(cfg, None, adapter)
    questions = pd.DataFrame({"question_id": ["q1"], "problem": ["1+1?"], "answer": ["2"]})
    first = eval_key(cfg, spec, "gsm8k", questions)
    weights.write_bytes(b"b" * 64)  # retrained in place: same path, same size
    assert eval_key(cfg, spec, "gsm8k", questions) != first
    other_questions = questions.assign(answer=["3"])
    assert eval_key(cfg, spec, "gsm8k", other_questions) != eval_key(cfg, spec, "gsm8k", questions)


def test_weights_behind_a_server_are_never_reused(tmp_path):
    cfg = fake_config()
    spec = cfg.models.policy.model_copy(
        update={"backend": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"}
    )
    assert weights_fingerprint(spec) is None
    assert eval_key(cfg, spec, "gsm8k", pd.DataFrame({"problem": ["x"], "answer": ["1"]})) is None
