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
unbranched completion rollout (``search.completion_max_tokens``, see ``completion.py``), so
routing grades finished solutions.

Owns the search loop, its batching and the per-depth selection; not the rollout
(``completion.py``), the scoring (``scoring.py``) or the per-question state (``state.py``);
not prompts (the caller gives chat messages), not grading or routing. ``search_isolated``
retries a failing batch in halves so that one bad question is reported as its own exception
and the others still finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from sphere_core.backends.base import ORM, PRM, Generator
from sphere_core.backends.prm import with_score_last
from sphere_core.config import RewardConfig
from sphere_core.errors import BackendError, GenerationError
from sphere_core.progress import emit
from sphere_core.search.completion import complete
from sphere_core.search.params import SearchParams
from sphere_core.search.scoring import score_nodes
from sphere_core.search.state import (
    SearchStats,
    SearchTask,
    Side,
    State,
    make_node,
    rank,
    tail_prompt,
)
from sphere_core.search.tree import Node, PathResult, SearchResult

__all__ = ["SearchStats", "SearchTask", "pruned_search", "search_isolated"]

log = logging.getLogger(__name__)

_Request = tuple[State, str | None, Node | None]
"""(question, side name or None at the root, tail or None at the root) to expand."""

_Group = tuple[State, str | None, list[Node]]
"""(question, side name or None at the root, the E candidates of one request)."""


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
        State(
            task=t,
            root_prompt=generator.apply_chat_template(t.messages),
            sides={"max": Side("max"), "min": Side("min")},
        )
        for t in tasks
    ]
    for depth in range(params.max_depth):
        requests = _requests(states, depth)
        if not requests:
            break
        t0 = time.perf_counter()
        groups = _expand(requests, generator, params, stage, depth, stats)
        nodes = [n for _, _, group in groups for n in group]
        owners = [st for st, _, group in groups for _ in group]
        score_nodes(nodes, owners, prm, orm, params, reward_cfg, stats)
        emit(
            "info",
            f"{stage} search depth {depth + 1}/{params.max_depth}: {len(states)} question(s), "
            f"{len(nodes)} candidates scored in {time.perf_counter() - t0:.0f}s",
            stage=stage,
            step=depth + 1,
            total=params.max_depth,
        )
        _prune(states, groups, params, depth)
    if params.completion_max_tokens > 0:
        complete(states, generator, prm, params, reward_cfg, stage, orm, stats)
    return [_result(st, params.delimiter) for st in states]


def _requests(states: list[State], depth: int) -> list[_Request]:
    """Depth 0: each question's root; later: every active tail of each side, max side first."""
    requests: list[_Request] = []
    for st in states:
        if depth == 0:
            requests.append((st, None, None))
        else:
            for side in st.sides.values():
                requests.extend((st, side.name, tail) for tail in side.beams)
    return requests


def _expand(
    requests: list[_Request],
    generator: Generator,
    params: SearchParams,
    stage: str,
    depth: int,
    stats: SearchStats,
) -> list[_Group]:
    """ONE generate call: E candidate steps per request, made into nodes of their question."""
    E = params.num_candidates
    prompts = [tail_prompt(st, tail, params.delimiter) for st, _, tail in requests]
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
    groups: list[_Group] = []
    for (st, side, tail), cands in zip(requests, outs):
        nodes = [make_node(st, stage, step, tail, side, depth, i) for i, step in enumerate(cands)]
        st.nodes.extend(nodes)
        groups.append((st, side, nodes))
        stats.generated_tokens += sum(n.num_tokens for n in nodes)
        stats.candidates += len(nodes)
    return groups


def _prune(states: list[State], groups: list[_Group], params: SearchParams, depth: int) -> None:
    """Keep each side's best k of its scored candidates as its new tails.

    Depth 0: both sides rank the root's candidates (top-k start the max side, bottom-k the min
    side). Later: each side ranks the pool of all its tails' candidates, keeping k minus the
    paths it has already finished.
    """
    last = depth == params.max_depth - 1
    if depth == 0:
        for st, _, nodes in groups:
            for side in st.sides.values():
                _select(side, nodes, params.keep, last)
        return
    pools: dict[tuple[int, str | None], list[Node]] = {}
    for st, side_name, nodes in groups:
        pools.setdefault((id(st), side_name), []).extend(nodes)
    for st in states:
        for side in st.sides.values():
            if side.beams:
                k = params.keep - len(side.finished)
                _select(side, pools.get((id(st), side.name), []), k, last)


def _select(side: Side, pool: list[Node], k: int, last: bool) -> None:
    """Replace the side's tails by the best k of ``pool``; finished tails leave the beam."""
    usable = [n for n in pool if n.text]
    if not usable:  # every candidate empty: the path ends where it was
        side.finished.extend(side.beams)
        side.beams = []
        return
    chosen = rank(usable, side.name)[: max(1, k)]
    side.beams = []
    for node in chosen:
        node.selected = True
        if node.terminal or last:
            side.finished.append(node)
        else:
            side.beams.append(node)


def _result(st: State, delimiter: str) -> SearchResult:
    paths = {}
    for name, side in st.sides.items():
        tails = side.finished + side.beams
        best = rank(tails, name)[0] if tails else None
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
