"""``mc-rollout`` PRM (Math-Shepherd style): a step's value is how often the policy finishes it
right.

For a prefix s_0..s_t of a candidate, the prompt is the policy's chat-templated solve prompt
(``prompts.solve_messages``) followed by the steps joined by the step delimiter and one more
delimiter, so the policy continues with the next step. k = ``prm.mc_rollouts`` completions are
sampled (temperature/top-p/top-k from ``search``, no stop string, at most ``prm.mc_max_tokens``
new tokens, seed ``prm.seed``); the value is the fraction whose final answer (extracted from
the completion alone, with the configured grading fallback, so a number in the prefix is never
mistaken for the rollout's answer) verifies against the gold answer.

A prefix whose last step already states a final answer (``grading.extract.has_final_answer``,
the rule that ends a search path) is not rolled out: its value is 1.0 or 0.0 from that answer
alone (the ``outcome`` rule).

Gold answers are required. All prefixes of a call (deduplicated) go to ONE ``generate_steps``
call with ``n=k`` and all texts to ONE grading call. ``score_last`` rolls out only the full
candidates; ``score`` rolls out every prefix (k x steps completions per candidate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sphere_core.backends.prm import BasePRM, prefixes, unflatten
from sphere_core.backends.prm_simple import outcome_rewards
from sphere_core.backends.registry import register_prm
from sphere_core.config import GradingConfig, SphereConfig
from sphere_core.errors import BackendError
from sphere_core.grading.extract import has_final_answer


class RolloutPRM(BasePRM):
    name = "mc-rollout"
    needs_gold = True

    def __init__(
        self,
        generator: Any,
        grading: GradingConfig,
        *,
        rollouts: int = 4,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = 0,
        delimiter: str = "\n\n",
    ) -> None:
        super().__init__()
        self.generator = generator
        self.grading = grading
        self.rollouts = int(rollouts)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.seed = seed
        self.delimiter = delimiter

    @classmethod
    def from_config(cls, cfg: SphereConfig, home: Path) -> RolloutPRM:
        from sphere_core.backends.cache import get_generator

        return cls(
            get_generator(cfg.models.policy, home),
            cfg.grading,
            rollouts=cfg.prm.mc_rollouts,
            max_tokens=cfg.prm.mc_max_tokens,
            temperature=cfg.search.temperature,
            top_p=cfg.search.top_p,
            top_k=cfg.search.top_k,
            seed=cfg.prm.seed,
            delimiter=cfg.search.step_delimiter,
        )

    # -- BasePRM ---------------------------------------------------------------------
    def _score(self, questions, steps, golds):
        items, offsets = prefixes(steps)
        values = self._values(
            [questions[c] for c, _ in items],
            [steps[c][: j + 1] for c, j in items],
            [golds[c] for c, _ in items],
        )
        return unflatten(values, steps, offsets)

    def _score_last(self, questions, steps, golds):
        return self._values(questions, steps, golds)

    # -- internals -------------------------------------------------------------------
    def prompt(self, question: str, steps: list[str]) -> str:
        from sphere_core.prompts import solve_messages

        root = self.generator.apply_chat_template(
            solve_messages(question), add_generation_prompt=True
        )
        return root + self.delimiter.join(s.strip() for s in steps) + self.delimiter

    def _values(
        self, questions: list[str], prefs: list[list[str]], golds: list[str]
    ) -> list[float]:
        out: list[float | None] = [None] * len(prefs)
        terminal = [i for i, p in enumerate(prefs) if has_final_answer(p[-1])]
        if terminal:
            direct = outcome_rewards(
                [prefs[i][-1] for i in terminal], [golds[i] for i in terminal], self.grading
            )
            for i, v in zip(terminal, direct):
                out[i] = v
        keys = {
            (questions[i], tuple(prefs[i]), golds[i]): i
            for i in range(len(prefs))
            if out[i] is None
        }
        if keys:
            firsts = list(keys.values())
            texts, rollout_golds = self._rollouts(firsts, questions, prefs, golds)
            from sphere_core.grading import get_grader

            verdicts = get_grader(self.grading).grade_texts(texts, rollout_golds)
            k = self.rollouts
            fractions = {
                key: sum(ok for _, ok in verdicts[n * k : (n + 1) * k]) / k
                for n, key in enumerate(keys)
            }
            for i in range(len(prefs)):
                if out[i] is None:
                    out[i] = fractions[(questions[i], tuple(prefs[i]), golds[i])]
        return [float(v) for v in out]  # type: ignore[arg-type]

    def _rollouts(self, idx: list[int], questions, prefs, golds) -> tuple[list[str], list[str]]:
        prompts = [self.prompt(questions[i], prefs[i]) for i in idx]
        results = self.generator.generate_steps(
            prompts,
            n=self.rollouts,
            temperature=self.temperature,
            stop=None,
            max_tokens=self.max_tokens,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
        )
        if len(results) != len(prompts) or any(len(r) != self.rollouts for r in results):
            raise BackendError(
                f"mc-rollout PRM: expected {self.rollouts} completions for each of "
                f"{len(prompts)} prefixes, got {[len(r) for r in results]}"
            )
        texts: list[str] = []
        rollout_golds: list[str] = []
        for i, completions in zip(idx, results):
            for step in completions:
                texts.append(step.text)
                rollout_golds.append(golds[i])
        return texts, rollout_golds


@register_prm("mc-rollout")
def _factory(cfg: SphereConfig, home: Path) -> RolloutPRM:
    return RolloutPRM.from_config(cfg, home)
