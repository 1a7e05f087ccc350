"""The error budget (``orchestration.max_error_fraction``) on the ``generate`` flow, in-process
on the Prefect harness with the scripted fakes: a stage over the budget fails the run (one
line naming the stage, the count and the first error; run record ``failed``; Prefect flow run
Failed); resuming searches only the errored questions again and keeps the finished ones;
under the budget the errors are counted on a completed run.
"""

from __future__ import annotations

import re

import pytest
from prefect.client.orchestration import get_client

from flows.commands.store_cmds import _run_cell
from flows.generate import generate_flow
from sphere_core.backends.cache import clear_caches
from sphere_core.backends.registry import register_generator
from sphere_core.error_budget import check_error_budget, combine_notes, errors_in_note
from sphere_core.errors import ErrorBudgetExceeded, GenerationError
from sphere_core.storage.repo import open_repository
from tests.fakes import EXPECTED, FakeGenerator, fake_question
from tests.flows.orch_fakes import SCENARIO_MIX, fake_overrides

TAG = re.compile(r"\[fake:(\w+):")
DOWN: set[str] = set()  # scenarios whose prompts the "fake-down" server fails


class DownGenerator(FakeGenerator):
    """The scripted fake behind a server that is down for the scenarios in ``DOWN``."""

    name = "fake-down"

    def generate_steps(self, prompts, n, temperature, stop, max_tokens, **kwargs):
        hit = sorted(s for s in DOWN for p in prompts if f"[fake:{s}:" in p)
        if hit:
            raise GenerationError(
                "server http://127.0.0.1:9/v1/completions failed after 4 "
                "attempts; last error: ConnectError: connection refused"
            )
        return super().generate_steps(prompts, n, temperature, stop, max_tokens, **kwargs)


register_generator("fake-down", lambda spec, home: DownGenerator(spec.path))


@pytest.fixture(autouse=True)
def _fresh(sphere_home):
    clear_caches()
    FakeGenerator.instances.clear()
    DOWN.clear()
    yield
    DOWN.clear()
    clear_caches()


def _record(home, run_id):
    with open_repository(None, home) as repo:
        return repo.get_run(run_id), repo.routes_for_run(run_id)


def _forget_calls() -> None:
    """Drop the cached generators, so the next run's calls are all that ``_searched`` sees."""
    clear_caches()
    FakeGenerator.instances.clear()


def _searched() -> set[str]:
    """Scenarios of the questions the generators were asked about since ``_forget_calls``."""
    prompts = [p for g in FakeGenerator.instances for c in g.calls for p in c["prompts"]]
    return {m.group(1) for p in prompts for m in [TAG.search(p)] if m}


def _expected() -> dict:
    from sphere_core.data.ingest import question_id

    return {
        (question_id(q["problem"], q["answer"]), stage): decision
        for i, s in enumerate(SCENARIO_MIX)
        for q in [fake_question(s, index=i)]
        for stage, decision in EXPECTED[s].items()
    }


def test_dead_server_fails_the_run_and_resume_retries_only_errored(
    prefect_api, sphere_home, questions_file
):
    sets = fake_overrides(questions_file, backend="fake-down")
    DOWN.update({"contrastive", "diverse"})  # 6 of 16 questions: over the default 25 %
    with pytest.raises(ErrorBudgetExceeded) as err:
        generate_flow(run_id="down", overrides=sets)
    line = str(err.value)
    assert line.startswith(
        "stage1: 6 of 16 questions ended in error (38%, over "
        "orchestration.max_error_fraction=0.25); first error: "
    )
    assert "connection refused" in line and "sphere resume down" in line and "\n" not in line
    run, events = _record(sphere_home, "down")
    assert run["status"] == "failed" and run["error"] == f"ErrorBudgetExceeded: {line}"
    assert events == []  # nothing recorded as final
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run["prefect_flow_run_id"]).state
    assert state.is_failed()  # a scheduled run shows red

    DOWN.clear()  # the server is back: resume
    _forget_calls()
    result = generate_flow(run_id="down", overrides=sets)
    run, events = _record(sphere_home, "down")
    assert run["status"] == "completed" and run["error"] is None and result.error_note is None
    assert {(e["question_id"], e["stage"]): e["decision"] for e in events} == _expected()
    assert result.pairs_train + result.pairs_eval > 0
    assert _searched() == {"contrastive", "diverse"}  # only the errored questions (and stage 3's)


def test_errors_under_the_budget_are_counted(prefect_api, sphere_home, tmp_path):
    from tests.fakes import write_fake_questions

    path = write_fake_questions(tmp_path / "q.jsonl", [*SCENARIO_MIX, "error"])  # 1 of 17
    result = generate_flow(run_id="some", overrides=fake_overrides(path))
    assert result.error_note.startswith(
        "1 error within orchestration.max_error_fraction=0.25 (stage1 1/17); first: "
    )
    assert "fake generation failure" in result.error_note
    run, _ = _record(sphere_home, "some")
    assert run["status"] == "completed" and run["error"] == result.error_note
    assert _run_cell("status", run) == "completed, 1 error"

    _forget_calls()
    again = generate_flow(run_id="some", overrides=fake_overrides(path))
    assert _searched() == {"error"}  # only it, again
    assert again.pairs_train == result.pairs_train

    _forget_calls()
    with pytest.raises(
        ErrorBudgetExceeded, match=r"^stage1: 1 of 17 .*fraction=0\); first error: "
    ):
        generate_flow(
            run_id="strict", overrides=[*fake_overrides(path), "orchestration.max_error_fraction=0"]
        )
    assert _record(sphere_home, "strict")[0]["status"] == "failed"


def test_budget_rules():
    counts = [
        {"stage": "stage1", "decision": "pair", "questions": 9},
        {"stage": "stage1", "decision": "error", "questions": 1},
        {"stage": "stage2", "decision": "error", "questions": 2},
        {"stage": "stage2", "decision": "unresolved", "questions": 6},
    ]
    first = {"stage1": "q1: boom", "stage2": "q7: bang"}.__getitem__
    note = check_error_budget(counts, 0.25, first, "r")
    assert note == (
        "3 errors within orchestration.max_error_fraction=0.25 "
        "(stage1 1/10, stage2 2/8); first: q1: boom"
    )
    assert errors_in_note(note) == 3 and errors_in_note("ValueError: x") is None
    with pytest.raises(ErrorBudgetExceeded, match=r"^stage2: 2 of 8 .* first error: q7: bang;"):
        check_error_budget(counts, 0.2, first, "r")
    assert check_error_budget(counts[:1], 0.0, first, "r") is None
    assert check_error_budget(counts, 1.0, first, "r") == note.replace("=0.25", "=1")
    both = combine_notes([note, None, "1 error within x; first: q"])
    assert errors_in_note(both) == 4 and both.startswith("4 errors in 2 rounds: round 1: 3 errors")
    assert combine_notes([None, None]) is None
