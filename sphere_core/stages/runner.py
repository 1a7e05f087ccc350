"""Run one stage over a batch of questions: select its questions, search, grade, route.

Pure with respect to storage (DataFrames in, DataFrames out); the generate flow calls it per
shard through ``storage.run_outputs``. A question whose prompt cannot be built, whose search
fails or whose grading fails gets an ``error`` routing row; the others go on.

Routing grades strictly: only a final answer in the paper's format or a ``\\boxed{}`` counts
(no last-number fallback, which stays an evaluation option), so every path routed as correct
ends in a real final answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sphere_core.config import SphereConfig
from sphere_core.errors import ArtifactError
from sphere_core.routing import GradedPath, error_row
from sphere_core.schemas import ROUTING_COLUMNS, TREE_COLUMNS
from sphere_core.search.params import SearchParams
from sphere_core.search.pruned import SearchStats, SearchTask, pruned_search, search_isolated
from sphere_core.search.tree import SearchResult
from sphere_core.stages import get_stage
from sphere_core.stages.base import StageItem

log = logging.getLogger(__name__)

ROUTING_FALLBACK = "none"
"""Answer extraction for routing: final-answer statements and \\boxed{} only."""


@dataclass
class StageResult:
    tree: pd.DataFrame  # TREE_COLUMNS
    routing: pd.DataFrame  # ROUTING_COLUMNS, one row per question given to the stage


def select_rows(stage, upstream: pd.DataFrame | None) -> pd.DataFrame | None:
    """The upstream routing rows that send questions to ``stage`` (None for a first stage)."""
    if stage.consumes is None:
        return None
    if upstream is None:
        raise ArtifactError(
            f"{stage.name} needs the {stage.consumes.stage} routing rows and got none"
        )
    rows = upstream[
        (upstream["stage"] == stage.consumes.stage)
        & (upstream["decision"] == stage.consumes.decision)
    ]
    return rows


def stage_items(
    stage, cfg: SphereConfig, questions: pd.DataFrame, upstream: pd.DataFrame | None
) -> tuple[list[StageItem], list[tuple[str, str]]]:
    """(items to search, (question_id, error) for questions that cannot be searched)."""
    rows = select_rows(stage, upstream)
    records = questions.to_dict("records")
    if rows is None:
        return [stage.item(cfg, q, None) for q in records], []
    by_id = {q["question_id"]: q for q in records}
    items, errors = [], []
    for row in rows.to_dict("records"):
        qid = row["question_id"]
        if qid not in by_id:
            errors.append((qid, "question is missing from the questions table"))
            continue
        try:
            items.append(stage.item(cfg, by_id[qid], row))
        except ValueError as err:  # e.g. an empty solution to correct
            errors.append((qid, f"cannot build the {stage.name} prompt: {err}"))
    return items, errors


def has_work(stage_name: str, upstream: pd.DataFrame | None) -> bool:
    """False when a stage that consumes routed questions got none (no model needs loading)."""
    rows = select_rows(get_stage(stage_name), upstream)
    return rows is None or len(rows) > 0


def run_stage(
    stage_name: str,
    cfg: SphereConfig,
    questions: pd.DataFrame,
    upstream: pd.DataFrame | None,
    *,
    run_id: str,
    home: Path,
    stats: SearchStats | None = None,
) -> StageResult:
    """Search, grade and route the questions of one stage. Per-question failures -> ``error``
    rows."""
    stage = get_stage(stage_name)
    items, missing = stage_items(stage, cfg, questions, upstream)
    routing = [error_row(run_id, qid, stage.name, msg) for qid, msg in missing]
    trees: list[dict] = []
    if items:
        tasks = [SearchTask(i.question_id, i.problem, i.gold, i.messages) for i in items]
        results = search_isolated(tasks, _searcher(stage, cfg, home, stats))
        routing.extend(_route(stage, cfg, items, results, trees, run_id))
    return StageResult(
        pd.DataFrame(trees, columns=TREE_COLUMNS), pd.DataFrame(routing, columns=ROUTING_COLUMNS)
    )


def _searcher(stage, cfg: SphereConfig, home: Path, stats: SearchStats | None):
    """The batch search of ``search.strategy``: the pruned search, or the sampling control arm
    (whole solutions, graded here with the routing grader; no PRM is loaded)."""
    from sphere_core.backends.cache import get_generator, get_orm, get_prm

    generator = get_generator(stage.model(cfg), home)
    if cfg.search.strategy == "sampling":
        from sphere_core.search.sampling_search import SamplingParams, sampling_search

        sampling = SamplingParams.for_stage(cfg, stage)
        return lambda batch: sampling_search(
            batch,
            generator,
            sampling,
            stage=stage.name,
            grade=lambda t, g: _grade(t, g, cfg),
            stats=stats,
        )
    params = SearchParams.for_stage(cfg, stage)
    prm = get_prm(cfg, home)
    orm = get_orm(cfg, home, prm) if params.use_orm else None
    return lambda batch: pruned_search(
        batch, generator, prm, params, cfg.reward, stage=stage.name, orm=orm, stats=stats
    )


def _grade(
    texts: list[str], golds: list[str], cfg: SphereConfig
) -> list[tuple[str | None, bool] | Exception]:
    """Grade all texts in one call; if that fails, one by one so a bad item is isolated."""
    from sphere_core.grading import get_grader

    grader = get_grader(cfg.grading)
    try:
        return list(grader.grade_texts(texts, golds, fallback=ROUTING_FALLBACK))
    except Exception as err:  # noqa: BLE001 - isolated below
        log.warning("batch grading failed (%s); grading one by one", err)
    out: list[tuple[str | None, bool] | Exception] = []
    for t, g in zip(texts, golds):
        try:
            out.extend(grader.grade_texts([t], [g], fallback=ROUTING_FALLBACK))
        except Exception as err:  # noqa: BLE001 - reported per question
            out.append(err)
    return out


def _route(
    stage,
    cfg: SphereConfig,
    items: list[StageItem],
    results: list[SearchResult | Exception],
    trees: list[dict],
    run_id: str,
) -> list[dict]:
    from sphere_core.grading import extract_answer

    ok = [(i, r) for i, r in zip(items, results) if isinstance(r, SearchResult)]
    texts = [t for _, r in ok for t in (r.max_path.text, r.min_path.text)]
    golds = [i.gold for i, _ in ok for _ in (0, 1)]
    grades = _grade(texts, golds, cfg) if texts else []
    graded = {i.question_id: (grades[2 * k], grades[2 * k + 1]) for k, (i, _) in enumerate(ok)}
    rows = []
    for item, res in zip(items, results):
        qid = item.question_id
        if isinstance(res, Exception):
            rows.append(error_row(run_id, qid, stage.name, f"{type(res).__name__}: {res}"))
            continue
        trees.extend(
            res.tree_rows(
                run_id=run_id,
                stage=stage.name,
                extract=lambda t: extract_answer(t, ROUTING_FALLBACK),
            )
        )
        g_max, g_min = graded[qid]
        if isinstance(g_max, Exception) or isinstance(g_min, Exception):
            bad = g_max if isinstance(g_max, Exception) else g_min
            rows.append(error_row(run_id, qid, stage.name, f"grading failed: {bad}"))
            continue
        best = GradedPath(res.max_path.text, g_max[0], bool(g_max[1]), res.max_path.reward)
        worst = GradedPath(res.min_path.text, g_min[0], bool(g_min[1]), res.min_path.reward)
        rows.append(stage.route(run_id, item, best, worst))
    return rows
