"""Preference pairs from routing rows and search trees (DESIGN §7), and the train/eval split.

Owns pair construction and its invariants; pure (DataFrames in, DataFrames out).
Trajectory pairs: chosen is verified correct, rejected verified wrong, and the two texts
differ; a candidate that breaks this is dropped with a logged reason (counted in
``PairBuild.dropped``). Step pairs (``pairs.step_pairs``): siblings sharing a prefix,
argmax vs argmin reward with a gap >= ``pairs.step_min_gap``; they are PRM-ranked, not
verified. Rows are TRL conversational preference rows: ``prompt`` = system + user
messages (S2 adds the wrong solution and the correction turn), ``chosen`` / ``rejected``
= one assistant message each.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sphere_core.config import SphereConfig
from sphere_core.schemas import PAIR_COLUMNS

log = logging.getLogger(__name__)

MessagesFn = Callable[..., list[dict[str, str]]]


@dataclass
class PairBuild:
    pairs: pd.DataFrame
    dropped: list[dict[str, Any]] = field(default_factory=list)  # question_id, stage, reason


def _prompt_fns() -> tuple[MessagesFn, MessagesFn]:
    from sphere_core.prompts import correction_messages, solve_messages

    return solve_messages, correction_messages


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _candidate(stage, route, qid, gold, prompt, chosen, rejected, r_c, r_r, a_c, a_r, ok_c, ok_r, run_id):
    return {
        "prompt": prompt, "chosen": chosen, "rejected": rejected, "question_id": qid, "stage": stage,
        "route": route, "granularity": "trajectory", "gold_answer": gold,
        "reward_chosen": _num(r_c), "reward_rejected": _num(r_r),
        "answer_chosen": a_c, "answer_rejected": a_r, "run_id": run_id,
        "_ok_chosen": ok_c, "_ok_rejected": ok_r,
    }


def _trajectory_candidates(routing: pd.DataFrame, questions: pd.DataFrame, run_id: str) -> list[dict]:
    solve, correct = _prompt_fns()
    qs = questions.set_index("question_id")
    s1 = {r["question_id"]: r for r in routing[routing["stage"] == "stage1"].to_dict("records")}
    out = []
    for r in routing.to_dict("records"):
        decision, qid, stage = r["decision"], r["question_id"], r["stage"]
        if qid not in qs.index:
            continue
        problem, gold = qs.at[qid, "problem"], str(qs.at[qid, "answer"])
        if stage == "stage1" and decision in ("pair", "pair_inverted"):
            m, n = ("max", "min") if decision == "pair" else ("min", "max")
            out.append(_candidate(stage, decision, qid, gold, solve(problem),
                                  _assistant(r[f"solution_{m}"]), _assistant(r[f"solution_{n}"]),
                                  r[f"reward_{m}"], r[f"reward_{n}"], r[f"answer_{m}"], r[f"answer_{n}"],
                                  r[f"correct_{m}"], r[f"correct_{n}"], run_id))
        elif stage == "stage2" and decision in ("pair", "pair_inverted"):
            src = r["source_solution"]
            m = "max" if decision == "pair" else "min"
            if decision == "pair" and r["correct_min"]:
                # Sol_min^SC is right too: reject the original wrong solution instead
                up = s1.get(qid, {})
                side = "min" if up.get("solution_min") == src else "max"
                rej = (src, up.get(f"reward_{side}"), up.get(f"answer_{side}"), up.get(f"correct_{side}"))
            else:
                n = "min" if decision == "pair" else "max"
                rej = (r[f"solution_{n}"], r[f"reward_{n}"], r[f"answer_{n}"], r[f"correct_{n}"])
            out.append(_candidate(stage, decision, qid, gold, correct(problem, src),
                                  _assistant(r[f"solution_{m}"]), _assistant(rej[0]),
                                  r[f"reward_{m}"], rej[1], r[f"answer_{m}"], rej[2],
                                  r[f"correct_{m}"], rej[3], run_id))
        elif stage == "stage3" and decision == "pair":
            up = s1.get(qid, {})
            n = "min" if not r["correct_min"] else "max"
            out.append(_candidate(stage, decision, qid, gold, solve(problem),
                                  _assistant(r["source_solution"]), _assistant(r[f"solution_{n}"]),
                                  up.get("reward_max"), r[f"reward_{n}"], up.get("answer_max"),
                                  r[f"answer_{n}"], up.get("correct_max"), r[f"correct_{n}"], run_id))
    return out


def _violation(c: dict) -> str | None:
    chosen, rejected = c["chosen"][0]["content"], c["rejected"][0]["content"]
    if not chosen or not rejected:
        return "empty chosen or rejected solution"
    if c["_ok_chosen"] is not True and c["_ok_chosen"] != 1:
        return "chosen solution is not verified correct"
    if c["_ok_rejected"] is not False and c["_ok_rejected"] != 0:
        return "rejected solution is not verified wrong"
    if chosen.strip() == rejected.strip():
        return "chosen and rejected are the same text"
    return None


def _step_pairs(trees: pd.DataFrame, routing: pd.DataFrame, questions: pd.DataFrame,
                cfg: SphereConfig, run_id: str) -> list[dict]:
    solve, correct = _prompt_fns()
    qs = questions.set_index("question_id")
    ok = routing[routing["decision"] != "error"]
    sources = {(r["question_id"], r["stage"]): r["source_solution"] for r in ok.to_dict("records")}
    texts = dict(zip(trees["node_id"], trees["text"]))
    parents = dict(zip(trees["node_id"], trees["parent_id"]))
    delim = cfg.search.step_delimiter
    out = []
    keyed = trees.assign(_parent=trees["parent_id"].fillna(""))
    for (qid, stage, parent, path), sib in keyed.groupby(["question_id", "stage", "_parent", "path"], sort=True):
        if (qid, stage) not in sources or qid not in qs.index or len(sib) < 2:
            continue
        sib = sib[sib["text"].str.len() > 0].sort_values("candidate_index")
        if len(sib) < 2:
            continue
        best = sib.loc[sib["reward"].idxmax()]
        worst = sib.loc[sib["reward"].idxmin()]
        if best["reward"] - worst["reward"] < cfg.pairs.step_min_gap or best["text"] == worst["text"]:
            continue
        prefix: list[str] = []
        node = parent or None
        while isinstance(node, str) and node:
            prefix.append(texts[node])
            node = parents.get(node)
        prefix = prefix[::-1]
        problem, gold = qs.at[qid, "problem"], str(qs.at[qid, "answer"])
        prompt = correct(problem, sources[(qid, stage)]) if stage == "stage2" else solve(problem)
        out.append({
            "prompt": prompt,
            "chosen": _assistant(delim.join(prefix + [best["text"]])),
            "rejected": _assistant(delim.join(prefix + [worst["text"]])),
            "question_id": qid, "stage": stage, "route": "step", "granularity": "step",
            "gold_answer": gold, "reward_chosen": float(best["reward"]),
            "reward_rejected": float(worst["reward"]),
            "answer_chosen": best["extracted_answer"], "answer_rejected": worst["extracted_answer"],
            "run_id": run_id,
        })
    return out


def assemble_pairs(cfg: SphereConfig, questions: pd.DataFrame, routing: pd.DataFrame,
                   trees: pd.DataFrame | None, *, run_id: str) -> PairBuild:
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


def split_pairs(pairs: pd.DataFrame, eval_fraction: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def build_pairs(cfg: SphereConfig, questions: pd.DataFrame, routing: pd.DataFrame,
                trees: pd.DataFrame | None, *, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) PAIR_COLUMNS frames for a run."""
    built = assemble_pairs(cfg, questions, routing, trees, run_id=run_id)
    return split_pairs(built.pairs, cfg.pairs.eval_fraction, cfg.pairs.seed)
