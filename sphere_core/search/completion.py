"""The pruned search's completion rollout and the answer cue.

A chosen path left without a final answer (``max_depth`` reached, its last step cut by
``max_step_tokens``, or EOS without an answer) is finished by ONE unbranched rollout from its
tail (no step delimiter, up to ``search.completion_max_tokens``), like an MCTS simulation. A
rollout that still states no answer is cued (``ANSWER_CUE``, up to
``search.answer_cue_tokens``) to write the answer it reached; the sampling strategy cues its
samples with the same ``cue_answers``.

Owns which paths are rolled out, the rollout and cue calls (one batched generate call each)
and the rollout node; the scoring is ``scoring.score_nodes``, like any step's.
"""

from __future__ import annotations

import time
from typing import Any

from sphere_core.backends.base import ORM, PRM, Generator
from sphere_core.config import RewardConfig
from sphere_core.errors import GenerationError
from sphere_core.progress import emit
from sphere_core.search.params import SearchParams
from sphere_core.search.scoring import score_nodes
from sphere_core.search.state import SearchStats, Side, State, make_node, rank, tail_prompt
from sphere_core.search.tree import Node, has_final_answer

ANSWER_CUE = "Final Answer: The final answer is $"
"""The start of the answer sentence the solve prompt asks for; the model writes the rest."""


def complete(
    states: list[State],
    generator: Generator,
    prm: PRM,
    params: SearchParams,
    reward_cfg: RewardConfig,
    stage: str,
    orm: ORM | None,
    stats: SearchStats,
) -> None:
    """Finish every chosen path that has no final answer with ONE unbranched rollout each.

    The rollout is one more node (``completion=True``), scored like any step, and becomes the
    side's only finished tail. All rollouts of the batch are one generate call and one PRM
    call (plus one cue call when some rollouts still state no answer).
    """
    todo = _unfinished(states)
    if not todo:
        return
    t0 = time.perf_counter()
    made = _roll_out(todo, generator, params, stage, stats)
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
    score_nodes(
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


def _unfinished(states: list[State]) -> list[tuple[State, Side, Node]]:
    """Each side whose chosen tail (its best finished or active one) states no final answer."""
    todo: list[tuple[State, Side, Node]] = []
    for st in states:
        for side in st.sides.values():
            tails = side.finished + side.beams
            if tails:
                best = rank(tails, side.name)[0]
                if not has_final_answer(best.text):
                    todo.append((st, side, best))
    return todo


def _roll_out(
    todo: list[tuple[State, Side, Node]],
    generator: Generator,
    params: SearchParams,
    stage: str,
    stats: SearchStats,
) -> dict[int, tuple[State, Node]]:
    """One generate call for all of ``todo``; the rollout node per distinct tail (by id)."""
    prompts = [tail_prompt(st, tail, params.delimiter) for st, _, tail in todo]
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
    made: dict[int, tuple[State, Node]] = {}  # one rollout per distinct tail (sides may share one)
    for (st, side, tail), out in zip(todo, outs):
        if id(tail) not in made:
            path = tail.path if tail.path != "root" else side.name
            node = make_node(st, stage, out[0], tail, path, tail.depth + 1, 0)
            node.completion, node.terminal, node.selected = True, True, True
            st.nodes.append(node)
            made[id(tail)] = (st, node)
            stats.generated_tokens += node.num_tokens
            stats.completions += 1
    return made


def _force_answers(
    made: list[tuple[State, Node]], generator: Generator, params: SearchParams, stats: SearchStats
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
        tail_prompt(st, node.parent, params.delimiter) + node.text + params.delimiter + ANSWER_CUE
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
