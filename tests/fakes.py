"""Scripted test doubles registered through the real backend registry.

A question's problem text carries its scenario: ``[fake:SCENARIO:ANSWER] ...`` (build one
with ``fake_question``). The fake generator writes steps tagged ``[good]`` / ``[bad]``
(alternating by candidate index, good first); the fake PRM scores the newest step 0.9 when
it is ``[good]`` and 0.2 when ``[bad]``, so the max path is all-good and the min path
all-bad. Whether a path's final answer is right is decided by the scenario, the context
(policy / self-correction prompt / pi_small) and the step's tag:

============================  ==========  ==============  ==============
scenario                      stage 1     stage 2 (corr.) stage 3 (small)
============================  ==========  ==============  ==============
contrastive                   good right  -               -
inverted                      bad right   -               -
corrected                     all wrong   good right      -
unresolved                    all wrong   all wrong       -
diverse                       all right   -               good right
no_error                      all right   -               all right
noanswer                      no final answer ever (stops at max_depth)
error                         generate_steps raises GenerationError
============================  ==========  ==============  ==============

Expected routing: contrastive -> stage1 pair; inverted -> pair_inverted; corrected ->
to_correction -> stage2 pair; unresolved -> to_correction -> unresolved; diverse ->
to_diversity -> stage3 pair; no_error -> to_diversity -> no_error; error -> error.

Steps at depth < ``terminal_depth`` (default 1) are intermediate; the step at
``terminal_depth`` holds ``Final Answer: \\boxed{..}``; a whole solution asked for from the root
(``stop=None``, the sampling strategy) is that final step. A generator whose model path
starts with "fake-small" plays pi_small.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from sphere_core.backends.registry import register_generator, register_prm
from sphere_core.config import SphereConfig, resolve_config
from sphere_core.errors import GenerationError
from sphere_core.schemas import Step

SCENARIOS = (
    "contrastive",
    "inverted",
    "corrected",
    "unresolved",
    "diverse",
    "no_error",
    "noanswer",
    "error",
)
EXPECTED = {  # scenario -> {stage: decision}
    "contrastive": {"stage1": "pair"},
    "inverted": {"stage1": "pair_inverted"},
    "corrected": {"stage1": "to_correction", "stage2": "pair"},
    "unresolved": {"stage1": "to_correction", "stage2": "unresolved"},
    "diverse": {"stage1": "to_diversity", "stage3": "pair"},
    "no_error": {"stage1": "to_diversity", "stage3": "no_error"},
    "noanswer": {"stage1": "to_correction", "stage2": "unresolved"},
    "error": {"stage1": "error"},
}
_TAG_RE = re.compile(r"\[fake:([a-z_]+):([^\]]+)\]")
ASSISTANT = "<|assistant|>"
USER = "<|user|>"
GOOD, BAD = "[good]", "[bad]"


def fake_question(scenario: str, answer: str = "42", index: int = 0) -> dict[str, Any]:
    """A QUESTION_COLUMNS row whose problem scripts the fakes."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown fake scenario {scenario!r}")
    problem = f"[fake:{scenario}:{answer}] Question {index}: what is the answer?"
    qid = hashlib.sha256(problem.encode()).hexdigest()[:16]
    return {
        "question_id": qid,
        "problem": problem,
        "answer": answer,
        "source": "fake",
        "source_row": index + 1,
        "source_id": None,
    }


def fake_questions(scenarios: Sequence[str], answer: str = "42"):
    import pandas as pd

    from sphere_core.schemas import QUESTION_COLUMNS

    return pd.DataFrame(
        [fake_question(s, answer, i) for i, s in enumerate(scenarios)], columns=QUESTION_COLUMNS
    )


def _wrong(answer: str) -> str:
    try:
        return str(int(answer) + 1)
    except ValueError:
        return answer + "0"


def _is_right(scenario: str, context: str, good: bool) -> bool:
    if scenario == "contrastive":
        return good
    if scenario == "inverted":
        return not good
    if scenario in ("corrected", "unresolved"):
        return context == "correction" and scenario == "corrected" and good
    if scenario == "diverse":
        return good if context == "small" else True
    return scenario == "no_error"


class FakeGenerator:
    """Deterministic scripted generator (see module docstring)."""

    name = "fake"
    instances: ClassVar[list[FakeGenerator]] = []

    def __init__(
        self, path: str = "fake-policy", terminal_depth: int = 1, adapter: str | None = None
    ):
        self.path = path
        self.adapter = adapter  # a trained model is the same script (its LoRA is not applied)
        self.small = path.startswith("fake-small")
        self.terminal_depth = terminal_depth
        self.calls: list[dict[str, Any]] = []
        FakeGenerator.instances.append(self)

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        body = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        return body + (ASSISTANT if add_generation_prompt else "")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate_steps(
        self, prompts, n, temperature, stop, max_tokens, *, top_p=1.0, top_k=0, seed=None
    ):
        self.calls.append(
            {"prompts": list(prompts), "n": n, "seed": seed, "max_tokens": max_tokens}
        )
        out = []
        for prompt in prompts:
            match = _TAG_RE.search(prompt)
            scenario, answer = match.groups() if match else ("contrastive", "42")
            if scenario == "error":
                raise GenerationError(f"fake generation failure for scenario 'error' ({answer})")
            delim = (stop or ["\n\n"])[0]
            tail = prompt.rsplit(ASSISTANT, 1)[-1]
            depth = len([s for s in tail.split(delim) if s.strip()])
            if stop is None and depth == 0:  # a whole solution from the root: its final step
                depth = self.terminal_depth
            context = (
                "small" if self.small else ("correction" if prompt.count(USER) >= 2 else "policy")
            )
            out.append([self._step(scenario, answer, context, depth, i) for i in range(n)])
        return out

    def _step(self, scenario: str, answer: str, context: str, depth: int, i: int) -> Step:
        good = i % 2 == 0
        tag = GOOD if good else BAD
        if depth < self.terminal_depth or scenario == "noanswer":
            text = f"{tag} Work on part {'abcdefgh'[depth % 8]} carefully, option {'xyzw'[i % 4]}."
            finish = "stop"
        else:
            value = answer if _is_right(scenario, context, good) else _wrong(answer)
            text = f"{tag} Final Answer: \\boxed{{{value}}}"
            finish = "eos"
        ntok = len(text.split())
        return Step(
            text=text,
            token_logprobs=[-0.1 if good else -0.9] * ntok,
            finish_reason=finish,
            num_tokens=ntok,
        )


class FakePRM:
    """Scores each step 0.9 ([good]) / 0.2 ([bad]) / 0.5; records its calls."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[int] = []

    @staticmethod
    def step_score(text: str) -> float:
        return 0.9 if GOOD in text else 0.2 if BAD in text else 0.5

    def score(self, questions, steps_per_candidate, gold_answers=None):
        self.calls.append(len(steps_per_candidate))
        return [[self.step_score(s) for s in steps] for steps in steps_per_candidate]


class FakeLastPRM(FakePRM):
    """Same scores, also offering ``score_last`` (like the judge PRM)."""

    name = "fake-last"

    def __init__(self) -> None:
        super().__init__()
        self.last_calls: list[int] = []

    def score_last(self, questions, steps_per_candidate, gold_answers=None):
        self.last_calls.append(len(steps_per_candidate))
        return [self.step_score(steps[-1]) for steps in steps_per_candidate]


class FakeORM:
    """ORM test double: the fake PRM score of the last step of the prefix."""

    name = "fake"

    def score(self, questions, solutions, gold_answers=None):
        return [FakePRM.step_score(s[-1]) if s else 0.0 for s in solutions]


register_generator("fake", lambda spec, home: FakeGenerator(spec.path, adapter=spec.adapter))
register_prm("fake", lambda cfg, home: FakePRM())
register_prm("fake-last", lambda cfg, home: FakeLastPRM())


def fake_config(*overrides: str, preset: str | None = None) -> SphereConfig:
    """A config wired to the fakes (policy 'fake-policy', pi_small 'fake-small', PRM 'fake')."""
    base = [
        "models.policy.backend=fake",
        "models.policy.path=fake-policy",
        "models.small={backend: fake, path: fake-small}",
        "prm.kind=fake",
        "search.num_candidates=4",
        "search.max_depth=3",
        "search.max_step_tokens=16",
        "grading.workers=1",
    ]
    return resolve_config(preset=preset, overrides=base + list(overrides))


def write_fake_questions(path: Path, scenarios: Sequence[str], answer: str = "42") -> Path:
    """A jsonl question file (problem/answer) for driver tests."""
    import json

    with open(path, "w") as fh:
        for i, s in enumerate(scenarios):
            row = fake_question(s, answer, i)
            fh.write(json.dumps({"problem": row["problem"], "answer": row["answer"]}) + "\n")
    return path
