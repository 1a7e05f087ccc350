"""Lock-step pruned search: keep the max-reward and min-reward path per question.

Every active path tail of every question in the batch advances together: per depth there
is ONE ``generate_steps`` call (all tails x E candidates) and ONE PRM call (all
candidates), plus one ORM call when ORM shaping is on. Depth 0 samples E candidates from
the root; the top-k start the max side and the bottom-k the min side. At depth t > 0 each
side's tails are expanded with E candidates each, the side's pool is ranked by Eq.3 and
its top-k (max side) or bottom-k (min side) become the new tails. A tail that holds a final
answer or ended at EOS is finished; everything stops at ``max_depth``. Sol_max is the
finished max-side tail with the highest reward (Sol_min: min side, lowest); with k = 1
these are simply the paper's two paths. A chosen path left without a final answer (max depth
reached, last step cut by the token limit, or EOS without an answer) is finished by one
unbranched completion rollout (``search.completion_max_tokens``), so routing grades finished
solutions.

Owns the search loop and its batching; not prompts (the caller gives chat messages), not
grading or routing. ``search_isolated`` retries a failing batch in halves so that one bad
question is reported as its own exception and the others still finish.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sphere_core.backends.base import ORM, PRM, Generator
from sphere_core.backends.prm import with_score_last
from sphere_core.config import RewardConfig
from sphere_core.errors import BackendError, GenerationError
from sphere_core.progress import emit
from sphere_core.schemas import Step
from sphere_core.search.params import SearchParams
from sphere_core.search.reward import ParentStats, step_reward
from sphere_core.search.tree import Node, PathResult, SearchResult, has_final_answer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchTask:
    """One question to search: ``messages`` are the chat turns the root prompt is built from."""

    question_id: str
    problem: str
    gold_answer: str
    messages: list[dict[str, str]]


@dataclass
class SearchStats:
    """Counters a caller may pass in to accumulate (benchmarks, progress)."""

    generate_calls: int = 0
    prm_calls: int = 0
    orm_calls: int = 0
    generated_tokens: int = 0
    candidates: int = 0
    generate_s: float = 0.0
    prm_s: float = 0.0
    orm_s: float = 0.0
    completions: int = 0
    forced_answers: int = 0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class _Side:
    name: str  # "max" | "min"
    beams: list[Node] = field(default_factory=list)  # active tails
    finished: list[Node] = field(default_factory=list)


@dataclass
class _State:
    task: SearchTask
    root_prompt: str
    sides: dict[str, _Side]
    nodes: list[Node] = field(default_factory=list)
    counter: int = 0

    def new_id(self, stage: str) -> str:
        self.counter += 1
        return f"{stage}:{self.task.question_id}:{self.counter}"


def _tail_prompt(state: _State, tail: Node | None, delimiter: str) -> str:
    if tail is None:
        return state.root_prompt
    return state.root_prompt + delimiter.join(tail.steps()) + delimiter


def _rank(pool: list[Node], side: str) -> list[Node]:
    """Best first for the side; ties go to the earliest candidate (max) / the latest (min)."""
    order = {id(n): i for i, n in enumerate(pool)}
    if side == "max":
        return sorted(pool, key=lambda n: (-n.reward, order[id(n)]))
    return sorted(pool, key=lambda n: (n.reward, -order[id(n)]))


def _last_scores(
    prm: PRM, questions: list[str], steps: list[list[str]], golds: list[str]
) -> list[float]:
    scores = list(prm.score_last(questions, steps, golds))  # wrapped once by pruned_search
    if len(scores) != len(steps):
        raise BackendError(f"PRM returned {len(scores)} scores for {len(steps)} candidates")
    for i, s in enumerate(scores):
        if not math.isfinite(float(s)):
            raise BackendError(f"PRM returned a non-finite score ({s}) for candidate {i}")
    return [float(s) for s in scores]


def _make_node(
    state: _State,
    stage: str,
    step: Step,
    parent: Node | None,
    side: str | None,
    depth: int,
    index: int,
) -> Node:
    text = step.text.strip()
    terminal = step.finish_reason == "eos" or has_final_answer(text)
    return Node(
        node_id=state.new_id(stage),
        parent=parent,
        depth=depth,
        path=side or "root",
        candidate_index=index,
        text=text,
        mean_logprob=step.mean_logprob,
        finish_reason=step.finish_reason,
        num_tokens=step.num_tokens or len(step.token_logprobs),
        terminal=terminal,
    )


def pruned_search(
    tasks: Sequence[SearchTask],
    generator: Generator,
    prm: PRM,
    params: SearchParams,
    reward_cfg: RewardConfig,
    *,
    stage: str,
    orm: ORM | None = None,
    stats: SearchStats | None = None,
) -> list[SearchResult]:
    """Search all ``tasks`` in lock-step; returns one SearchResult per task, in order.

    Raises on any backend failure (the whole batch fails; see ``search_isolated``).
    """
    stats = stats if stats is not None else SearchStats()
    prm = with_score_last(prm)  # once per search, not per depth
    if params.use_orm and orm is None:
        raise BackendError("ORM shaping is on for this stage but no ORM was given")
    states = [
        _State(
            task=t,
            root_prompt=generator.apply_chat_template(t.messages),
            sides={"max": _Side("max"), "min": _Side("min")},
        )
        for t in tasks
    ]
    E = params.num_candidates
    for depth in range(params.max_depth):
        # (state, side name or None at the root, tail or None)
        requests: list[tuple[_State, str | None, Node | None]] = []
        for st in states:
            if depth == 0:
                requests.append((st, None, None))
            else:
                for side in st.sides.values():
                    requests.extend((st, side.name, tail) for tail in side.beams)
        if not requests:
            break
        prompts = [_tail_prompt(st, tail, params.delimiter) for st, _, tail in requests]
        t0 = time.perf_counter()
        outs = generator.generate_steps(
            prompts,
            E,
            params.temperature,
            [params.delimiter],
            params.max_step_tokens,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.call_seed(depth),
        )
        stats.generate_s += time.perf_counter() - t0
        stats.generate_calls += 1
        if len(outs) != len(prompts) or any(len(o) != E for o in outs):
            raise GenerationError(
                f"generator returned {[len(o) for o in outs]} candidates for {len(prompts)} "
                f"prompts x n={E}"
            )

        groups: list[tuple[_State, str | None, list[Node]]] = []
        flat: list[tuple[_State, Node]] = []
        for (st, side, tail), cands in zip(requests, outs):
            nodes = [
                _make_node(st, stage, step, tail, side, depth, i) for i, step in enumerate(cands)
            ]
            st.nodes.extend(nodes)
            groups.append((st, side, nodes))
            flat.extend((st, n) for n in nodes)
            stats.generated_tokens += sum(n.num_tokens for n in nodes)
        stats.candidates += len(flat)

        _score([n for _, n in flat], [st for st, _ in flat], prm, orm, params, reward_cfg, stats)
        emit(
            "info",
            f"{stage} search depth {depth + 1}/{params.max_depth}: {len(states)} question(s), "
            f"{len(flat)} candidates scored in {time.perf_counter() - t0:.0f}s",
            stage=stage,
            step=depth + 1,
            total=params.max_depth,
        )

        last = depth == params.max_depth - 1
        if depth == 0:
            for st, _, nodes in groups:
                for side in st.sides.values():
                    _select(side, nodes, params.keep, last)
        else:
            pools: dict[tuple[int, str], list[Node]] = {}
            for st, side, nodes in groups:
                pools.setdefault((id(st), side), []).extend(nodes)  # type: ignore[arg-type]
            for st in states:
                for side in st.sides.values():
                    if side.beams:
                        _select(
                            side,
                            pools.get((id(st), side.name), []),
                            params.keep - len(side.finished),
                            last,
                        )
    if params.completion_max_tokens > 0:
        _complete(states, generator, prm, params, reward_cfg, stage, orm, stats)
    return [_result(st, params.delimiter) for st in states]


def _complete(
    states: list[_State],
    generator: Generator,
    prm: PRM,
    params: SearchParams,
    reward_cfg: RewardConfig,
    stage: str,
    orm: ORM | None,
    stats: SearchStats,
) -> None:
    """Finish every chosen path that has no final answer with ONE unbranched rollout each.

    A path that reached ``max_depth``, whose last step was cut by ``max_step_tokens`` or that
    ended at EOS without a final answer is continued from its tail (no step delimiter, up to
    ``completion_max_tokens``), like an MCTS simulation; the rollout is one more node
    (``completion=True``), scored like any step, and becomes the side's tail. All rollouts of
    the batch are one generate call and one PRM call.
    """
    todo: list[tuple[_State, _Side, Node]] = []
    for st in states:
        for side in st.sides.values():
            tails = side.finished + side.beams
            if tails:
                best = _rank(tails, side.name)[0]
                if not has_final_answer(best.text):
                    todo.append((st, side, best))
    if not todo:
        return
    prompts = [_tail_prompt(st, tail, params.delimiter) for st, _, tail in todo]
    t0 = time.perf_counter()
    outs = generator.generate_steps(
        prompts,
        1,
        params.temperature,
        None,
        params.completion_max_tokens,
        top_p=params.top_p,
        top_k=params.top_k,
        seed=params.completion_seed,
    )
    stats.generate_s += time.perf_counter() - t0
    stats.generate_calls += 1
    if len(outs) != len(prompts) or any(len(o) != 1 for o in outs):
        raise GenerationError(
            f"generator returned {[len(o) for o in outs]} completions for {len(prompts)} prompts"
        )
    made: dict[int, tuple[_State, Node]] = {}  # one rollout per distinct tail (sides may share one)
    for (st, side, tail), out in zip(todo, outs):
        if id(tail) not in made:
            path = tail.path if tail.path != "root" else side.name
            node = _make_node(st, stage, out[0], tail, path, tail.depth + 1, 0)
            node.completion, node.terminal, node.selected = True, True, True
            st.nodes.append(node)
            made[id(tail)] = (st, node)
            stats.generated_tokens += node.num_tokens
            stats.completions += 1
    forced = stats.forced_answers
    if params.answer_cue_tokens > 0:
        _force_answers(list(made.values()), generator, params, stats)
    emit(
        "info",
        f"{stage} completion: {len(made)} unfinished path(s) rolled out, "
        f"{stats.forced_answers - forced} of them cued to state their answer, "
        f"in {time.perf_counter() - t0:.0f}s",
        stage=stage,
    )
    _score(
        [n for _, n in made.values()],
        [st for st, _ in made.values()],
        prm,
        orm,
        params,
        reward_cfg,
        stats,
    )
    for _, side, tail in todo:
        side.finished, side.beams = [made[id(tail)][1]], []


ANSWER_CUE = "Final Answer: The final answer is $"
"""The start of the answer sentence the solve prompt asks for; the model writes the rest."""


def _force_answers(
    made: list[tuple[_State, Node]], generator: Generator, params: SearchParams, stats: SearchStats
) -> None:
    """Let every rollout that still has no final answer state one (one batched call).

    A rollout can end at its token budget or at EOS without the answer sentence (small models
    often do). Its text is extended by a blank line and ``ANSWER_CUE``, and the model writes the
    answer it reached (one line, at most ``answer_cue_tokens`` tokens), as answer-forcing in
    budget-limited decoding does. The answer is the model's own; whether it is right is graded
    as usual, and a text that still states no answer stays unfinished.
    """
    todo = [(st, node) for st, node in made if not has_final_answer(node.text)]
    if not todo:
        return
    prompts = [
        _tail_prompt(st, node.parent, params.delimiter) + node.text + params.delimiter + ANSWER_CUE
        for st, node in todo
    ]
    cue_answers([node for _, node in todo], prompts, generator, params, params.answer_seed, stats)


def cue_answers(
    nodes: list[Node],
    prompts: list[str],
    generator: Generator,
    params: Any,
    seed: int,
    stats: SearchStats,
) -> None:
    """One batched call: each prompt is a node's context ending in ``ANSWER_CUE``; the model's
    one-line continuation completes the node's answer sentence and makes the node terminal.

    ``params`` gives the sampling settings (``temperature``, ``top_p``, ``top_k``,
    ``answer_cue_tokens``, ``delimiter``): the pruned search's and the sampling strategy's.
    """
    t0 = time.perf_counter()
    outs = generator.generate_steps(
        prompts,
        1,
        params.temperature,
        ["\n"],
        params.answer_cue_tokens,
        top_p=params.top_p,
        top_k=params.top_k,
        seed=seed,
    )
    stats.generate_s += time.perf_counter() - t0
    stats.generate_calls += 1
    if len(outs) != len(prompts) or any(len(o) != 1 for o in outs):
        raise GenerationError(
            f"generator returned {[len(o) for o in outs]} answers for {len(prompts)} prompts"
        )
    for node, out in zip(nodes, outs):
        node.text = f"{node.text}{params.delimiter}{ANSWER_CUE}{out[0].text.strip()}"
        node.num_tokens += out[0].num_tokens
        node.terminal = True
        stats.generated_tokens += out[0].num_tokens
        stats.forced_answers += 1


def _score(
    nodes: list[Node],
    owners: list[_State],
    prm: PRM,
    orm: ORM | None,
    params: SearchParams,
    reward_cfg: RewardConfig,
    stats: SearchStats,
) -> None:
    """PRM (and ORM) scores and the Eq. 3 reward of ``nodes`` (one batched call each)."""
    questions = [st.task.problem for st in owners]
    steps = [n.steps() for n in nodes]
    golds = [st.task.gold_answer for st in owners]
    t0 = time.perf_counter()
    prm_scores = _last_scores(prm, questions, steps, golds)
    stats.prm_s += time.perf_counter() - t0
    stats.prm_calls += 1
    orm_scores: list[float | None] = [None] * len(nodes)
    if params.use_orm:
        t0 = time.perf_counter()
        got = list(orm.score(questions, steps, golds))  # type: ignore[union-attr]
        stats.orm_s += time.perf_counter() - t0
        stats.orm_calls += 1
        if len(got) != len(nodes):
            raise BackendError(f"ORM returned {len(got)} scores for {len(nodes)} candidates")
        orm_scores = [float(x) for x in got]
    for node, p, o in zip(nodes, prm_scores, orm_scores):
        node.prm = p
        node.orm = math.nan if o is None else o
        parent = (
            None if node.parent is None else ParentStats(node.parent.prm, node.parent.mean_logprob)
        )
        node.reward = step_reward(
            reward_cfg, prm=p, mean_logprob=node.mean_logprob, parent=parent, orm=o
        )


def _select(side: _Side, pool: list[Node], k: int, last: bool) -> None:
    """Replace the side's tails by the best k of ``pool``; finished tails leave the beam."""
    usable = [n for n in pool if n.text]
    if not usable:  # every candidate empty: the path ends where it was
        side.finished.extend(side.beams)
        side.beams = []
        return
    chosen = _rank(usable, side.name)[: max(1, k)]
    side.beams = []
    for node in chosen:
        node.selected = True
        if node.terminal or last:
            side.finished.append(node)
        else:
            side.beams.append(node)


def _result(st: _State, delimiter: str) -> SearchResult:
    paths = {}
    for name, side in st.sides.items():
        tails = side.finished + side.beams
        best = _rank(tails, name)[0] if tails else None
        paths[name] = PathResult(best.lineage() if best is not None else [], delimiter)
    return SearchResult(st.task.question_id, paths["max"], paths["min"], st.nodes)


def search_isolated(
    tasks: Sequence[SearchTask], run: Callable[[Sequence[SearchTask]], list[SearchResult]]
) -> list[SearchResult | Exception]:
    """Run ``run`` on the batch; if it raises, retry in halves until each failure is one task.

    Returns one SearchResult or the Exception that task raised on its own, in task order.
    """
    if not tasks:
        return []
    try:
        return list(run(tasks))
    except Exception as err:  # noqa: BLE001 - isolated below, reported per question
        if len(tasks) == 1:
            log.warning("search failed for question %s: %s", tasks[0].question_id, err)
            return [err]
        log.warning(
            "search failed for a batch of %d questions (%s); retrying in halves", len(tasks), err
        )
    mid = len(tasks) // 2
    return search_isolated(tasks[:mid], run) + search_isolated(tasks[mid:], run)
