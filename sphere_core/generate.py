"""The three SPHERE stages over a batch of questions, pair assembly, and a direct driver.

``run_stage`` and ``build_pairs`` are pure (DataFrames in, DataFrames out): the Prefect
tasks call them per shard. ``generate_run`` is the sequential driver without Prefect
(ingest -> stage1 -> stage2 -> stage3 -> pairs) and the only function here that writes
files. Stage 1 searches every question with pi and E candidates; Stage 2 re-searches the
``to_correction`` questions with the correction prompt (question + the Stage-1 Sol_min by
default) and ORM shaping; Stage 3 re-searches the ``to_diversity`` questions with pi_small
and factor x E candidates. A question whose search or grading fails gets an ``error`` row;
the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_core.config import SphereConfig
from sphere_core.errors import ArtifactError, ConfigError
from sphere_core.pairs import assemble_pairs, build_pairs, split_pairs
from sphere_core.routing import GradedPath, error_row, route_stage1, route_stage2, route_stage3
from sphere_core.schemas import REJECT_COLUMNS, ROUTING_COLUMNS, TREE_COLUMNS
from sphere_core.search.params import SearchParams
from sphere_core.search.pruned import SearchStats, SearchTask, pruned_search, search_isolated
from sphere_core.search.small_model import small_model_warning
from sphere_core.search.tree import SearchResult
from sphere_core.summary import summarize, summary_table

log = logging.getLogger(__name__)

STAGES = ("stage1", "stage2", "stage3")
STAGE_INPUT = {"stage2": "to_correction", "stage3": "to_diversity"}
Progress = Callable[[str], None] | None

__all__ = ["STAGES", "StageResult", "build_pairs", "generate_run", "run_stage", "summary_table"]


@dataclass
class StageResult:
    tree: pd.DataFrame     # TREE_COLUMNS
    routing: pd.DataFrame  # ROUTING_COLUMNS, one row per question given to the stage


@dataclass
class _Item:
    question_id: str
    problem: str
    gold: str
    messages: list[dict[str, str]]
    context: str | None = None  # stage2: the wrong solution shown; stage3: the Stage-1 Sol_max


def _stage_items(stage: str, cfg: SphereConfig, questions: pd.DataFrame,
                 upstream: pd.DataFrame | None) -> tuple[list[_Item], list[dict]]:
    from sphere_core.prompts import correction_messages, solve_messages

    if stage == "stage1":
        return [_Item(r["question_id"], r["problem"], str(r["answer"]), solve_messages(r["problem"]))
                for r in questions.to_dict("records")], []
    if upstream is None:
        raise ArtifactError(f"{stage} needs the stage-1 routing rows (upstream) and got none")
    qs = questions.set_index("question_id")
    rows = upstream[(upstream["stage"] == "stage1") & (upstream["decision"] == STAGE_INPUT[stage])]
    items, errors = [], []
    for r in rows.to_dict("records"):
        qid = r["question_id"]
        if qid not in qs.index:
            errors.append((qid, "question is missing from the questions table"))
            continue
        problem, gold = qs.at[qid, "problem"], str(qs.at[qid, "answer"])
        try:
            if stage == "stage2":
                source = r[f"solution_{cfg.routing.correction_source}"] or ""
                items.append(_Item(qid, problem, gold, correction_messages(problem, source), source))
            else:
                items.append(_Item(qid, problem, gold, solve_messages(problem), r["solution_max"]))
        except ValueError as err:  # e.g. an empty Stage-1 solution to correct
            errors.append((qid, f"cannot build the {stage} prompt: {err}"))
    return items, errors


def _load_backends(stage: str, cfg: SphereConfig, home: Path, use_orm: bool):
    from sphere_core.backends.cache import get_generator, get_orm, get_prm

    spec = cfg.small_model if stage == "stage3" else cfg.models.policy
    generator = get_generator(spec, home)
    prm = get_prm(cfg, home)
    orm = get_orm(cfg, home, prm) if use_orm else None
    return generator, prm, orm


def _grade(texts: list[str], golds: list[str], cfg: SphereConfig) -> list[tuple[str | None, bool] | Exception]:
    """Grade all texts in one call; if that fails, one by one so a bad item is isolated."""
    from sphere_core.grading import get_grader

    grader = get_grader(cfg.grading)
    try:
        return list(grader.grade_texts(texts, golds))
    except Exception as err:  # noqa: BLE001 - isolated below
        log.warning("batch grading failed (%s); grading one by one", err)
    out: list[tuple[str | None, bool] | Exception] = []
    for t, g in zip(texts, golds):
        try:
            out.extend(grader.grade_texts([t], [g]))
        except Exception as err:  # noqa: BLE001 - reported per question
            out.append(err)
    return out


def run_stage(stage: str, cfg: SphereConfig, questions: pd.DataFrame, upstream: pd.DataFrame | None,
              *, run_id: str, home: Path, progress: Progress = None,
              stats: SearchStats | None = None) -> StageResult:
    """Search, grade and route the questions of one stage. Per-question failures -> ``error`` rows."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    items, missing = _stage_items(stage, cfg, questions, upstream)
    routing = [error_row(run_id, qid, stage, msg) for qid, msg in missing]
    trees: list[dict] = []
    if items:
        params = SearchParams.for_stage(cfg, stage)
        generator, prm, orm = _load_backends(stage, cfg, home, params.use_orm)
        if progress:
            progress(f"{stage}: searching {len(items)} questions (E={params.num_candidates}, "
                     f"depth<={params.max_depth})")
        tasks = [SearchTask(i.question_id, i.problem, i.gold, i.messages) for i in items]

        def run(batch):
            return pruned_search(batch, generator, prm, params, cfg.reward, stage=stage, orm=orm, stats=stats)

        results = search_isolated(tasks, run)
        routing.extend(_route(stage, cfg, items, results, trees, run_id))
        if progress:
            decided = pd.Series([r["decision"] for r in routing]).value_counts().to_dict()
            progress(f"{stage}: done {decided}")
    tree_df = pd.DataFrame(trees, columns=TREE_COLUMNS)
    return StageResult(tree_df, pd.DataFrame(routing, columns=ROUTING_COLUMNS))


def _route(stage: str, cfg: SphereConfig, items: list[_Item], results: list[SearchResult | Exception],
           trees: list[dict], run_id: str) -> list[dict]:
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
            rows.append(error_row(run_id, qid, stage, f"{type(res).__name__}: {res}"))
            continue
        trees.extend(res.tree_rows(run_id=run_id, stage=stage,
                                   extract=lambda t: extract_answer(t, cfg.grading.fallback)))
        g_max, g_min = graded[qid]
        if isinstance(g_max, Exception) or isinstance(g_min, Exception):
            bad = g_max if isinstance(g_max, Exception) else g_min
            rows.append(error_row(run_id, qid, stage, f"grading failed: {bad}"))
            continue
        best = GradedPath(res.max_path.text, g_max[0], bool(g_max[1]), res.max_path.reward)
        worst = GradedPath(res.min_path.text, g_min[0], bool(g_min[1]), res.min_path.reward)
        if stage == "stage1":
            rows.append(route_stage1(run_id, qid, item.gold, best, worst))
        elif stage == "stage2":
            rows.append(route_stage2(run_id, qid, item.gold, best, worst, item.context or ""))
        else:
            rows.append(route_stage3(run_id, qid, item.gold, best, worst, item.context or ""))
    return rows


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def generate_run(cfg: SphereConfig, *, run_id: str, home: Path, progress: Progress = None) -> dict[str, Any]:
    """Ingest -> stages -> pairs without Prefect; writes runs/<run_id>/ and returns the summary."""
    from sphere_core.backends.cache import get_generator
    from sphere_core.data.ingest import ingest_file
    from sphere_core.paths import run_dir

    started = time.time()
    out = run_dir(home, run_id)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _m: None)
    policy = cfg.models.policy
    generator = get_generator(policy, home)
    ingested = ingest_file(cfg.data.path, cfg.data,
                           max_prompt_tokens=max(1, policy.max_model_len - cfg.search.max_step_tokens),
                           count_tokens=generator.count_tokens)
    questions = ingested.questions
    _write(questions, out / "questions.parquet")
    _write(ingested.rejects.reindex(columns=REJECT_COLUMNS), out / "rejects.parquet")
    say(f"ingest: {len(questions)} questions, {len(ingested.rejects)} rejected rows")

    warnings: list[str] = []
    if "stage3" in cfg.routing.stages:
        warning = small_model_warning(cfg)
        if warning:
            log.warning(warning)
            warnings.append(warning)
    routing_parts, tree_parts, stats = [], [], SearchStats()
    upstream: pd.DataFrame | None = None
    for stage in STAGES:
        if stage in cfg.routing.stages:
            res = run_stage(stage, cfg, questions, upstream, run_id=run_id, home=home, progress=progress,
                            stats=stats)
        else:
            res = StageResult(pd.DataFrame(columns=TREE_COLUMNS), pd.DataFrame(columns=ROUTING_COLUMNS))
        if stage == "stage1":
            upstream = res.routing
        _write(res.tree, out / "tree" / f"{stage}.parquet")
        _write(res.routing, out / "routing" / f"{stage}.parquet")
        routing_parts.append(res.routing)
        tree_parts.append(res.tree)
    routing = pd.concat([r for r in routing_parts if len(r)] or [routing_parts[0]], ignore_index=True)
    trees = pd.concat([t for t in tree_parts if len(t)] or [tree_parts[0]], ignore_index=True)
    built = assemble_pairs(cfg, questions, routing, trees, run_id=run_id)
    train, evals = split_pairs(built.pairs, cfg.pairs.eval_fraction, cfg.pairs.seed)
    _write(train, out / "pairs" / "train.parquet")
    _write(evals, out / "pairs" / "eval.parquet")
    say(f"pairs: {len(train)} train, {len(evals)} eval, {len(built.dropped)} dropped")

    summary = summarize(routing, built.pairs, run_id=run_id, stages_run=list(cfg.routing.stages))
    summary.update({
        "questions": len(questions), "rejects": len(ingested.rejects),
        "pairs_train": len(train), "pairs_eval": len(evals), "dropped_pairs": built.dropped,
        "warnings": warnings, "elapsed_s": round(time.time() - started, 3),
        "search": {"generate_calls": stats.generate_calls, "prm_calls": stats.prm_calls,
                   "generated_tokens": stats.generated_tokens, "candidates": stats.candidates,
                   "generate_s": round(stats.generate_s, 3), "prm_s": round(stats.prm_s, 3),
                   "orm_s": round(stats.orm_s, 3)},
        "run_dir": str(out),
    })
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(out / "summary.json")
    return summary
