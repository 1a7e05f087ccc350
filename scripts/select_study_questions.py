"""Choose the study's and the tuning set's GSM8K-train questions by a fixed, outcome-blind rule.

The study (``sphere run --preset study``) trains on GSM8K-train questions and evaluates on
GSM8K-test (and MATH-500); the PRM-calibration benchmark and any hyper-parameter choice tune
on a third, disjoint set. The rule uses nothing the model produced, so the sets cannot be
fitted to the evaluation:

1. Start from GSM8K-train (``sphere_core/data/builtin/gsm8k_train.jsonl``, 7,473 rows).
2. Drop every question the demo uses (``builtin/gsm8k_demo.jsonl``) and every question whose
   normalised problem text (lower case, whitespace collapsed) equals a problem of any
   evaluation benchmark shipped in ``sphere_core/data/benchmarks/``.
3. Keep problems of at most ``--max-problem-chars`` characters whose gold solution has at most
   ``--max-solution-lines`` lines: the 0.5B policy writes ~200 tokens for a 3-line GSM8K
   solution and runs out of its token budget on long ones (``docs/demo.md``), and every search
   step costs CPU time.
4. Order the rest by ``sha256(f"{seed}:{id}")`` (a seeded shuffle that does not depend on the
   file order) and take the first ``--study`` rows as the study set and the next ``--tune``
   rows as the tuning set.

Writes ``builtin/gsm8k_study.jsonl`` and ``builtin/gsm8k_tune.jsonl`` (same row format as the
other builtin sets) and prints a JSON summary last.

    python scripts/select_study_questions.py            # the command behind the shipped files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILTIN = REPO / "sphere_core" / "data" / "builtin"
BENCHMARKS = REPO / "sphere_core" / "data" / "benchmarks"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def _rows(path: Path) -> list[dict]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()
    ]


def select(args: argparse.Namespace) -> dict:
    train = _rows(BUILTIN / "gsm8k_train.jsonl")
    demo_ids = {r["id"] for r in _rows(BUILTIN / "gsm8k_demo.jsonl")}
    eval_problems = {
        _norm(r["problem"]) for p in sorted(BENCHMARKS.glob("*.jsonl")) for r in _rows(p)
    }
    kept, dropped = [], {"demo": 0, "in_evaluation": 0, "too_long": 0}
    for row in train:
        if row["id"] in demo_ids:
            dropped["demo"] += 1
        elif _norm(row["problem"]) in eval_problems:
            dropped["in_evaluation"] += 1
        elif (
            len(row["problem"]) > args.max_problem_chars
            or len(row.get("solution", "").splitlines()) > args.max_solution_lines
        ):
            dropped["too_long"] += 1
        else:
            kept.append(row)
    kept.sort(key=lambda r: hashlib.sha256(f"{args.seed}:{r['id']}".encode()).hexdigest())
    study, tune = kept[: args.study], kept[args.study : args.study + args.tune]
    for name, rows in (("gsm8k_study", study), ("gsm8k_tune", tune)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (args.out_dir / f"{name}.jsonl").write_text(text)
    return {
        "train_rows": len(train),
        "dropped": dropped,
        "eligible": len(kept),
        "study": len(study),
        "tune": len(tune),
        "seed": args.seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--study", type=int, default=256, help="rows in the study set (default 256)"
    )
    parser.add_argument(
        "--tune", type=int, default=128, help="rows in the tuning set (default 128)"
    )
    parser.add_argument("--max-problem-chars", type=int, default=200)
    parser.add_argument("--max-solution-lines", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=BUILTIN)
    print(json.dumps(select(parser.parse_args())))


if __name__ == "__main__":
    main()
