"""Control arm (``search.strategy: sampling``): plain sampling of whole solutions, no tree, no PRM.

Per question the policy writes whole solutions (``stop=None``) at the search temperature, every
question of the batch in lock-step (one ``generate_steps`` call per round and sample count).
How many:

* ``search.sampling_token_budget`` set: draw in rounds until the question's generated tokens
  reach the budget. Round 0 draws the stage's E samples; each later round draws
  ``ceil(remaining budget / mean tokens per sample so far)``, so a question overshoots the
  budget by about one sample at most. ``search.samples_per_question`` (if set) caps the count.
* otherwise one round of N = ``search.samples_per_question`` (default: E) samples.

Stage 3 multiplies N and the budget by ``search.small_candidates_factor``, as the pruned
search multiplies E. A sample that ends without a final answer gets the same answer cue as the
pruned search's completion rollout (``search.answer_cue_tokens``), one batched call per round.

After the last round every sample is graded (the ``grade`` the caller passes: the routing
grader). Sol_max is the first verified-right sample and Sol_min the first verified-wrong one
(wrong samples that state a final answer before those that state none), both in sample order,
so the choice is random with respect to quality. All right: Sol_max is the first sample and
Sol_min the next one with a different text; all wrong: Sol_min is the first wrong sample (as
above, so Stage 2 is shown, and Stage 3 rejects, an answered one) and Sol_max the next with a
different text. Routing then sends the question on exactly as an all-right (all-wrong) pruned
search would. Stage 1 and Stage 2 therefore never route ``pair_inverted``.

Every sample is one depth-0 ``root`` node of the tree table (with its ``num_tokens``); the two
chosen ones are ``selected``. Rewards and PRM scores are NaN: nothing is scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sphere_core.backends.base import Generator
from sphere_core.config import SphereConfig
from sphere_core.errors import GenerationError, GradingError
from sphere_core.progress import emit
from sphere_core.search.completion import ANSWER_CUE, cue_answers
from sphere_core.search.params import SearchParams
from sphere_core.search.state import SearchStats, SearchTask, State, make_node
from sphere_core.search.tree import Node, PathResult, SearchResult, has_final_answer

MAX_ROUNDS = 64
"""A budgeted question stops after this many rounds even if its budget is not spent."""

SAMPLING_KEYS = ("strategy", "samples_per_question", "sampling_token_budget", "sampling_max_tokens")
"""Search settings only the sampling strategy reads."""

Grade = Callable[[list[str], list[str]], Sequence[Any]]
"""(texts, golds) -> per text (answer, correct) or the Exception its grading raised."""


def search_config(cfg: SphereConfig) -> dict[str, Any]:
    """The ``search`` settings that can change a stage's output under the configured strategy.

    A pruned run leaves the sampling settings out, so its artifact keys are those of runs made
    before the strategy existed; a sampling run keys on all of them.
    """
    d = cfg.to_dict()["search"]
    if cfg.search.strategy == "pruned":
        return {k: v for k, v in d.items() if k not in SAMPLING_KEYS}
    return d


@dataclass(frozen=True)
class SamplingParams:
    samples: int | None  # N without a budget; the cap (or None) with one
    token_budget: int | None
    first_round: int
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    answer_cue_tokens: int
    delimiter: str

    def call_seed(self, round_: int) -> int:
        return self.seed + 2 * round_

    def answer_seed(self, round_: int) -> int:
        return self.seed + 2 * round_ + 1

    @classmethod
    def for_stage(cls, cfg: SphereConfig, stage: Any) -> SamplingParams:
        """Parameters of ``stage`` (registered stage or name): E, seed offset, factor from it."""
        base = SearchParams.for_stage(cfg, stage)
        s = cfg.search
        scale = max(1, round(base.num_candidates / s.num_candidates))  # Stage 3: the factor
        budget = s.sampling_token_budget * scale if s.sampling_token_budget else None
        if s.samples_per_question:
            samples: int | None = s.samples_per_question * scale
        else:
            samples = None if budget else base.num_candidates
        first = (
            min(base.num_candidates, samples)
            if budget and samples
            else (samples or base.num_candidates)
        )
        max_tokens = (
            s.sampling_max_tokens or s.max_depth * s.max_step_tokens + s.completion_max_tokens
        )
        return cls(
            samples=samples,
            token_budget=budget,
            first_round=first,
            max_tokens=max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            seed=base.seed,
            answer_cue_tokens=s.answer_cue_tokens,
            delimiter=s.step_delimiter,
        )

    def wanted(self, drawn: int, tokens: int, round_: int) -> int:
        """Samples to draw for a question in ``round_`` after ``drawn`` samples of ``tokens``."""
        if round_ == 0:
            return self.first_round
        if self.token_budget is None or tokens >= self.token_budget or round_ >= MAX_ROUNDS:
            return 0
        if tokens == 0:  # nothing generated so far: more samples would not spend the budget
            return 0
        need = math.ceil((self.token_budget - tokens) / (tokens / drawn))
        return max(0, min(need, self.samples - drawn)) if self.samples else need


def sampling_search(
    tasks: Sequence[SearchTask],
    generator: Generator,
    params: SamplingParams,
    *,
    stage: str,
    grade: Grade,
    stats: SearchStats | None = None,
) -> list[SearchResult]:
    """Sample, grade and choose for all ``tasks`` in lock-step; one SearchResult per task."""
    stats = stats if stats is not None else SearchStats()
    states = [
        State(task=t, root_prompt=generator.apply_chat_template(t.messages), sides={})
        for t in tasks
    ]
    tokens = {id(st): 0 for st in states}
    for round_ in range(MAX_ROUNDS + 1):
        requests = [
            (st, k)
            for st in states
            if (k := params.wanted(len(st.nodes), tokens[id(st)], round_)) > 0
        ]
        if not requests:
            break
        t0 = time.perf_counter()
        made = _draw(requests, generator, params, round_, stage, stats)
        if params.answer_cue_tokens > 0:
            _cue_answers(made, generator, params, round_, stats)
        for st, node in made:
            tokens[id(st)] += node.num_tokens
        emit(
            "info",
            f"{stage} sampling round {round_ + 1}: {len(requests)} question(s), "
            f"{len(made)} solutions in {time.perf_counter() - t0:.0f}s",
            stage=stage,
        )
    nodes = [n for st in states for n in st.nodes]
    golds = [st.task.gold_answer for st in states for _ in st.nodes]
    grades = list(grade([n.text for n in nodes], golds)) if nodes else []
    if len(grades) != len(nodes):
        raise GradingError(f"the grader returned {len(grades)} grades for {len(nodes)} solutions")
    by_node = {id(n): g for n, g in zip(nodes, grades)}
    results = []
    for st in states:
        best, worst = choose(st.nodes, [by_node[id(n)] for n in st.nodes])
        best.selected = worst.selected = True
        results.append(
            SearchResult(
                st.task.question_id,
                PathResult([best], params.delimiter),
                PathResult([worst], params.delimiter),
                st.nodes,
            )
        )
    return results


def _draw(
    requests: list[tuple[State, int]],
    generator: Generator,
    params: SamplingParams,
    round_: int,
    stage: str,
    stats: SearchStats,
) -> list[tuple[State, Node]]:
    """One generate call per distinct sample count in this round; the new nodes, in order."""
    made: list[tuple[State, Node]] = []
    for n in sorted({k for _, k in requests}):
        group = [st for st, k in requests if k == n]
        t0 = time.perf_counter()
        outs = generator.generate_steps(
            [st.root_prompt for st in group],
            n,
            params.temperature,
            None,
            params.max_tokens,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.call_seed(round_),
        )
        stats.generate_s += time.perf_counter() - t0
        stats.generate_calls += 1
        if len(outs) != len(group) or any(len(o) != n for o in outs):
            raise GenerationError(
                f"generator returned {[len(o) for o in outs]} solutions for "
                f"{len(group)} prompts x n={n}"
            )
        for st, steps in zip(group, outs):
            for step in steps:
                node = make_node(st, stage, step, None, None, 0, len(st.nodes))
                st.nodes.append(node)
                made.append((st, node))
                stats.generated_tokens += node.num_tokens
                stats.candidates += 1
    return made


def _cue_answers(
    made: list[tuple[State, Node]],
    generator: Generator,
    params: SamplingParams,
    round_: int,
    stats: SearchStats,
) -> None:
    """Let every sample without a final answer state one (as the pruned search's rollouts do)."""
    todo = [(st, node) for st, node in made if node.text and not has_final_answer(node.text)]
    if not todo:
        return
    prompts = [st.root_prompt + node.text + params.delimiter + ANSWER_CUE for st, node in todo]
    nodes = [node for _, node in todo]
    cue_answers(nodes, prompts, generator, params, params.answer_seed(round_), stats)


def choose(nodes: list[Node], grades: Sequence[Any]) -> tuple[Node, Node]:
    """(Sol_max, Sol_min) of one question's graded samples (see the module docstring)."""
    graded = [(n, g) for n, g in zip(nodes, grades) if not isinstance(g, Exception)]
    right = [n for n, g in graded if g[1]]
    wrong = [n for n, g in graded if not g[1] and g[0] is not None] + [
        n for n, g in graded if not g[1] and g[0] is None
    ]
    if right and wrong:
        return right[0], wrong[0]
    pool = right or wrong or nodes
    first = pool[0]
    other = next((n for n in pool[1:] if n.text.strip() != first.text.strip()), None)
    other = other or (pool[1] if len(pool) > 1 else first)
    if wrong and not right:  # the wrong sample most worth showing (answered) is Sol_min
        return other, first
    return first, other
