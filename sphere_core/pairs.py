"""Preference pairs from routing rows and search trees, and the train/eval split.

Owns pair invariants, step pairs, the split and the Arrow schema of pair files; each stage
says which pairs its routing rows yield (``Stage.pair_candidates``). Pure (DataFrames in,
DataFrames out). Trajectory pairs: chosen is verified correct, rejected verified wrong, both
end in a final answer (finished solutions), and the two texts differ; a candidate that breaks
this is dropped with a logged reason (counted in ``PairBuild.dropped``). Step pairs
(``pairs.step_pairs``): siblings sharing a prefix, argmax vs argmin reward with a gap >=
``pairs.step_min_gap``; they are PRM-ranked, not verified. Rows are TRL conversational
preference rows: ``prompt`` = system + user messages (the correction stage adds the wrong
solution and the correction turn), ``chosen`` / ``rejected`` = one assistant message each.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sphere_core.config import SphereConfig
from sphere_core.grading.extract import has_final_answer
from sphere_core.schemas import PAIR_COLUMNS

log = logging.getLogger(__name__)


@dataclass
class PairBuild:
    pairs: pd.DataFrame
    dropped: list[dict[str, Any]] = field(default_factory=list)  # question_id, stage, reason


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _trajectory_candidates(
    routing: pd.DataFrame, questions: pd.DataFrame, run_id: str
) -> list[dict]:
    """Each stage's pair candidates for its routing rows (``Stage.pair_candidates``)."""
    from sphere_core.stages import get_stage

    by_id = {q["question_id"]: q for q in questions.to_dict("records")}
    upstream: dict[str, dict[str, dict]] = {}  # question_id -> stage -> row
    for r in routing.to_dict("records"):
        upstream.setdefault(r["question_id"], {})[r["stage"]] = r
    out = []
    for r in routing.to_dict("records"):
        question = by_id.get(r["question_id"])
        if question is None or r["decision"] == "error":
            continue
        out.extend(
            get_stage(r["stage"]).pair_candidates(r, question, upstream[r["question_id"]], run_id)
        )
    return out


def _violation(c: dict) -> str | None:
    chosen, rejected = c["chosen"][0]["content"], c["rejected"][0]["content"]
    if not chosen or not rejected:
        return "empty chosen or rejected solution"
    if c["_ok_chosen"] is not True and c["_ok_chosen"] != 1:
        return "chosen solution is not verified correct"
    if c["_ok_rejected"] is not False and c["_ok_rejected"] != 0:
        return "rejected solution is not verified wrong"
    if c["answer_chosen"] is None or not has_final_answer(chosen):
        return "chosen solution does not end in a final answer"
    if c["answer_rejected"] is None or not has_final_answer(rejected):
        return "rejected solution is unfinished (no final answer)"
    if chosen.strip() == rejected.strip():
        return "chosen and rejected are the same text"
    return None


def _step_pairs(
    trees: pd.DataFrame,
    routing: pd.DataFrame,
    questions: pd.DataFrame,
    cfg: SphereConfig,
    run_id: str,
) -> list[dict]:
    from sphere_core.stages import get_stage

    qs = questions.set_index("question_id")
    ok = routing[routing["decision"] != "error"]
    sources = {(r["question_id"], r["stage"]): r["source_solution"] for r in ok.to_dict("records")}
    texts = dict(zip(trees["node_id"], trees["text"]))
    parents = dict(zip(trees["node_id"], trees["parent_id"]))
    delim = cfg.search.step_delimiter
    out = []
    keyed = trees.assign(_parent=trees["parent_id"].fillna(""))
    for (qid, stage, parent, path), sib in keyed.groupby(
        ["question_id", "stage", "_parent", "path"], sort=True
    ):
        if (qid, stage) not in sources or qid not in qs.index or len(sib) < 2:
            continue
        sib = sib[sib["text"].str.len() > 0].sort_values("candidate_index")
        if len(sib) < 2:
            continue
        best = sib.loc[sib["reward"].idxmax()]
        worst = sib.loc[sib["reward"].idxmin()]
        if (
            best["reward"] - worst["reward"] < cfg.pairs.step_min_gap
            or best["text"] == worst["text"]
        ):
            continue
        prefix: list[str] = []
        node = parent or None
        while isinstance(node, str) and node:
            prefix.append(texts[node])
            node = parents.get(node)
        prefix = prefix[::-1]
        problem, gold = qs.at[qid, "problem"], str(qs.at[qid, "answer"])
        prompt = get_stage(stage).messages(problem, sources[(qid, stage)])
        out.append(
            {
                "prompt": prompt,
                "chosen": _assistant(delim.join(prefix + [best["text"]])),
                "rejected": _assistant(delim.join(prefix + [worst["text"]])),
                "question_id": qid,
                "stage": stage,
                "route": "step",
                "granularity": "step",
                "gold_answer": gold,
                "reward_chosen": float(best["reward"]),
                "reward_rejected": float(worst["reward"]),
                "answer_chosen": best["extracted_answer"],
                "answer_rejected": worst["extracted_answer"],
                "run_id": run_id,
            }
        )
    return out


def assemble_pairs(
    cfg: SphereConfig,
    questions: pd.DataFrame,
    routing: pd.DataFrame,
    trees: pd.DataFrame | None,
    *,
    run_id: str,
) -> PairBuild:
    """All pairs (trajectory, plus step pairs when enabled) and the dropped candidates."""
    dropped: list[dict[str, Any]] = []
    rows: list[dict] = []
    for c in _trajectory_candidates(routing, questions, run_id):
        why = _violation(c)
        if why is not None:
            log.warning("dropping %s pair for question %s: %s", c["stage"], c["question_id"], why)
            dropped.append({"question_id": c["question_id"], "stage": c["stage"], "reason": why})
            continue
        rows.append({k: v for k, v in c.items() if not k.startswith("_")})
    if cfg.pairs.step_pairs and trees is not None and len(trees):
        rows.extend(_step_pairs(trees, routing, questions, cfg, run_id))
    return PairBuild(pd.DataFrame(rows, columns=PAIR_COLUMNS), dropped)


def _split_hash(question_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).hexdigest()
    return int(digest[:15], 16) / float(16**15)


def split_pairs(
    pairs: pd.DataFrame, eval_fraction: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic split by question-id hash; all pairs of a question land on one side.

    With eval_fraction > 0 and >= 2 questions, neither side is left empty.
    """
    qids = sorted(pairs["question_id"].unique(), key=lambda q: _split_hash(q, seed))
    in_eval = {q for q in qids if _split_hash(q, seed) < eval_fraction}
    if eval_fraction > 0 and len(qids) >= 2:
        if not in_eval:
            in_eval = {qids[0]}
        if len(in_eval) == len(qids):
            in_eval.discard(qids[-1])
    mask = pairs["question_id"].isin(in_eval)
    return pairs[~mask].reset_index(drop=True), pairs[mask].reset_index(drop=True)


def build_pairs(
    cfg: SphereConfig,
    questions: pd.DataFrame,
    routing: pd.DataFrame,
    trees: pd.DataFrame | None,
    *,
    run_id: str,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(train, eval, dropped) for a run: PAIR_COLUMNS frames and the dropped candidates."""
    built = assemble_pairs(cfg, questions, routing, trees, run_id=run_id)
    train, evaluation = split_pairs(built.pairs, cfg.pairs.eval_fraction, cfg.pairs.seed)
    return train, evaluation, built.dropped


def pair_schema():
    """The Arrow schema of pair files, so that an empty file still has typed columns
    (``datasets.load_dataset("parquet", ...)`` then loads it as 0 rows)."""
    import pyarrow as pa

    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    types = {
        "prompt": message,
        "chosen": message,
        "rejected": message,
        "reward_chosen": pa.float64(),
        "reward_rejected": pa.float64(),
    }
    return pa.schema([(c, types.get(c, pa.string())) for c in PAIR_COLUMNS])


def write_pairs_file(pairs: pd.DataFrame, path) -> None:
    """Write PAIR_COLUMNS rows to ``path`` atomically with :func:`pair_schema`."""
    import os
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pairs.reindex(columns=PAIR_COLUMNS)
    table = pa.Table.from_pandas(frame, schema=pair_schema(), preserve_index=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with pq.ParquetWriter(tmp, table.schema) as writer:
        if table.num_rows:  # an empty file gets no row group at all: readers see 0 rows, not a
            writer.write_table(table)  # 0-row group (which datasets' parquet loader rejects)
    os.replace(tmp, path)
