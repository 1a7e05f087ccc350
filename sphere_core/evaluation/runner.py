"""Benchmark evaluation: Pass@1 and two-turn self-correction (paper §4.2, §5.3, A.3).

Turn 1 prompts with ``solve_messages(problem)`` (the paper's Table-6 system prompt) and
samples with ``evaluation.temperature/top_p/top_k`` (T=0.1, top_p=1, top_k=50; ``greedy``
decodes with T=0). Turn 2 (``evaluation.self_correction``) shows the model its own turn-1
answer with the correction prompt (``correction_messages``). Both turns are graded with
the configured Grader. An empty turn-1 answer, or a turn-2 prompt longer than the context,
skips turn 2 for that item: its turn-1 answer stands as the final one (``note`` says why).

Writes per-item Parquet files ``<out_dir>/<label>/<benchmark>.parquet`` and returns
(items, summary). The items of one model on one question set are also a content-addressed
artifact (``eval_items``): the same weights, questions and settings are evaluated once.
Recording summaries in the store is :func:`record_summary`'s job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sphere_core import interrupts, progress
from sphere_core.config import SphereConfig
from sphere_core.errors import EvaluationError, InputDataError
from sphere_core.evaluation.metrics import ITEM_COLUMNS, SUMMARY_COLUMNS, summary_rows

log = logging.getLogger(__name__)


def load_questions(benchmark: str, limit: int | None, benchmark_file: str | None) -> pd.DataFrame:
    """A packaged benchmark by name, or the questions of ``benchmark_file`` (named
    ``benchmark``)."""
    from sphere_core.data.benchmark_sets import BENCHMARKS, load_benchmark, load_question_file

    try:
        if benchmark_file:
            return load_question_file(benchmark_file, limit)
        if benchmark not in BENCHMARKS:
            raise EvaluationError(
                f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}"
            )
        return load_benchmark(benchmark, limit)
    except InputDataError as err:
        raise EvaluationError(str(err)) from err


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def generate_answers(generator, prompts: Sequence[str], cfg: SphereConfig, desc: str) -> list[str]:
    """One sampled answer per chat-formatted prompt, in batches; a progress event per batch."""
    ev = cfg.evaluation
    temperature, top_k = (0.0, 0) if ev.greedy else (ev.temperature, ev.top_k)
    size = cfg.models.policy.batch_size
    out: list[str] = []
    began = time.monotonic()
    for chunk in _batches(len(prompts), size):
        interrupts.check()  # SIGINT/SIGTERM: stop between batches (also in a worker thread)
        steps = generator.generate_steps(
            [prompts[i] for i in chunk],
            1,
            temperature,
            None,
            ev.max_new_tokens,
            top_p=ev.top_p,
            top_k=top_k,
            seed=ev.seed + chunk.start,
        )
        out.extend(s[0].text for s in steps)
        progress.emit(
            "info",
            f"{desc}: {len(out)}/{len(prompts)} answers in {time.monotonic() - began:.0f}s",
            stage="evaluate",
            done=len(out),
            total=len(prompts),
        )
    return out


def evaluate_questions(
    generator, questions: pd.DataFrame, cfg: SphereConfig, desc: str = "eval"
) -> pd.DataFrame:
    """Per-item records (ITEM_COLUMNS + note) of one model on one question set."""
    from sphere_core.grading import get_grader
    from sphere_core.prompts import correction_messages, solve_messages

    grader = get_grader(cfg.grading)
    problems = questions["problem"].astype(str).tolist()
    golds = questions["answer"].astype(str).tolist()
    prompts_1 = [generator.apply_chat_template(solve_messages(p)) for p in problems]
    responses_1 = generate_answers(generator, prompts_1, cfg, f"{desc} turn 1")
    graded_1 = grader.grade_texts(responses_1, golds)
    items = pd.DataFrame(
        {
            "question_id": questions["question_id"].astype(str).tolist(),
            "problem": problems,
            "gold": golds,
            "response_1": responses_1,
            "extracted_1": [g[0] for g in graded_1],
            "correct_1": [bool(g[1]) for g in graded_1],
            "response_2": None,
            "extracted_2": None,
            "correct_2": None,
            "note": "",
        }
    )
    if cfg.evaluation.self_correction and len(items):
        _second_turn(generator, items, cfg, grader, correction_messages, desc)
    return items[ITEM_COLUMNS + ["note"]]


def _second_turn(
    generator, items: pd.DataFrame, cfg: SphereConfig, grader, correction_messages, desc: str
) -> None:
    budget = cfg.models.policy.max_model_len - 1
    todo, prompts = [], []
    for i, row in items.iterrows():
        if not row["response_1"].strip():
            items.at[i, "note"] = "turn 2 skipped: empty turn-1 answer"
            continue
        prompt = generator.apply_chat_template(
            correction_messages(row["problem"], row["response_1"])
        )
        if generator.count_tokens(prompt) >= budget:
            items.at[i, "note"] = "turn 2 skipped: prompt longer than models.policy.max_model_len"
            continue
        todo.append(i)
        prompts.append(prompt)
    # skipped items keep their turn-1 answer as the final one
    items["extracted_2"] = items["extracted_1"].astype(object)
    items["correct_2"] = items["correct_1"].astype(object)
    if not todo:
        return
    responses = generate_answers(generator, prompts, cfg, f"{desc} turn 2")
    graded = grader.grade_texts(responses, items.loc[todo, "gold"].tolist())
    for i, text, (extracted, correct) in zip(todo, responses, graded):
        items.at[i, "response_2"] = text
        items.at[i, "extracted_2"] = extracted
        items.at[i, "correct_2"] = bool(correct)


def evaluate(
    cfg: SphereConfig,
    model_label: str,
    model_path: str,
    adapter_dir: Path | None,
    benchmarks: Sequence[str],
    limit: int | None,
    benchmark_file: str | None = None,
    *,
    home: Path,
    out_dir: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate one model (weights ``model_path`` plus an optional LoRA adapter) on each
    benchmark -> (items with benchmark/model_label, summary).

    With ``benchmark_file`` the questions come from that file and ``benchmarks`` must name
    it once (the name used in outputs; default: the file's stem).
    """
    from sphere_core.evaluation.model_specs import model_spec

    if benchmark_file:
        benchmarks = list(benchmarks)[:1] or [Path(benchmark_file).stem]
    if not benchmarks:
        raise EvaluationError(
            "no benchmarks to evaluate; pass --benchmarks or set evaluation.benchmarks"
        )
    spec = model_spec(cfg, model_path, adapter_dir)
    all_items, summaries = [], []
    for bench in benchmarks:
        items, summary = evaluate_model(
            cfg, model_label, spec, bench, limit, benchmark_file, home=home, out_dir=out_dir
        )
        summaries.append(summary)
        all_items.append(items.assign(benchmark=bench, model_label=model_label))
    summary = (
        pd.concat(summaries, ignore_index=True)
        if summaries
        else pd.DataFrame(columns=SUMMARY_COLUMNS)
    )
    return pd.concat(all_items, ignore_index=True), summary


def evaluate_model(
    cfg: SphereConfig,
    model_label: str,
    spec,
    benchmark: str,
    limit: int | None,
    benchmark_file: str | None = None,
    *,
    home: Path,
    out_dir: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One model (a ``ModelSpec``, built through the backend registry) on one benchmark:
    (per-item records, summary rows); the items are written to
    ``out_dir/<label>/<bench>.parquet``."""
    from sphere_core.evaluation.model_specs import load_generator
    from sphere_core.storage.keys import eval_key
    from sphere_core.storage.run_outputs import RunOutputs

    questions = load_questions(benchmark, limit, benchmark_file)

    def compute() -> pd.DataFrame:
        generator = load_generator(spec, home)
        progress.emit(
            "info",
            f"evaluate {model_label} on {benchmark}: {len(questions)} questions",
            stage="evaluate",
            model=model_label,
            benchmark=benchmark,
            total=len(questions),
        )
        return evaluate_questions(generator, questions, cfg, desc=f"{model_label}/{benchmark}")

    key = eval_key(cfg, spec, benchmark, questions)
    items, reused = RunOutputs(home).evaluation(key, compute) if key else (compute(), False)
    if out_dir is not None:
        path = Path(out_dir) / model_label / f"{benchmark}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        items.to_parquet(tmp, index=False)
        tmp.replace(path)
    summary = summary_rows(model_label, benchmark, items)
    reuse_note = " (reused: same weights, questions and settings)" if reused else ""
    progress.emit(
        "info",
        f"evaluate {model_label} on {benchmark}: Pass@1 "
        f"{items['correct_1'].astype(bool).mean() if len(items) else 0:.1%} (n={len(items)})"
        f"{reuse_note}",
        stage="evaluate",
        model=model_label,
        benchmark=benchmark,
    )
    return items, summary


def record_summary(
    repo, run_id: str, summary: pd.DataFrame, details: dict | None = None, round: int = 1
) -> int:
    """Write each summary row to the store's ``evaluations`` table; returns rows written."""
    for row in summary.itertuples(index=False):
        repo.record_evaluation(
            run_id,
            row.model_label,
            row.benchmark,
            row.metric,
            None if pd.isna(row.value) else float(row.value),
            int(row.n),
            details,
            round=round,
        )
    return len(summary)
