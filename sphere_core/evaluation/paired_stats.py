"""Paired statistics of two models answering the same questions (pure functions).

For every benchmark the two models' per-item records are joined on ``question_id``; only the
questions both answered count. Per benchmark:

* Pass@1 of each model (share of turn-1 answers that verify) and their difference ``b - a``;
* a percentile **paired bootstrap** confidence interval of the difference: question indices are
  resampled with replacement (``n_boot`` times, numpy ``default_rng(seed)``), so both models'
  answers to a question stay together;
* the **exact McNemar** p-value: a two-sided binomial test on the discordant questions,
  ``p = min(1, 2 * P[X <= min(r2w, w2r)])`` with ``X ~ Bin(r2w + w2r, 1/2)`` (1.0 when no
  question is discordant), computed with exact integer arithmetic;
* right->wrong (``a`` right, ``b`` wrong) and wrong->right counts;
* the share of **format failures** of each model: answers with no parsable final answer
  (the grader's extraction gave nothing, ``extracted_1`` null or blank). Records without an
  ``extracted_1`` column give ``None`` ("n/a").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

_BOOT_CELLS = 1 << 21  # resampled indices drawn per chunk (bounds memory for large n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def paired_bootstrap_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of ``mean(b) - mean(a)`` by resampling paired items with replacement."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples need equal 1-d shapes, got {x.shape} and {y.shape}")
    if len(x) == 0:
        raise ValueError("paired bootstrap needs at least one pair")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    diff, n = y - x, len(x)
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOT_CELLS // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """Model ``a`` vs model ``b`` on the questions of one benchmark both answered."""

    benchmark: str
    label_a: str
    label_b: str
    n: int
    pass_a: float
    pass_b: float
    diff: float  # pass_b - pass_a
    ci_low: float
    ci_high: float
    level: float
    n_boot: int
    seed: int
    p_mcnemar: float
    right_to_wrong: int  # a right, b wrong
    wrong_to_right: int  # a wrong, b right
    format_fail_a: float | None  # None: the records do not say (n/a)
    format_fail_b: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_failures(items: pd.DataFrame) -> pd.Series | None:
    """Per item: True when no final answer could be parsed; None without ``extracted_1``."""
    if "extracted_1" not in items.columns:
        return None
    extracted = items["extracted_1"]
    return extracted.isna() | (extracted.astype(str).str.strip() == "")


def _prepare(items: pd.DataFrame, which: str) -> pd.DataFrame:
    missing = [c for c in ("question_id", "correct_1") if c not in items.columns]
    if missing:
        raise ValueError(f"evaluation records of {which} lack column(s) {', '.join(missing)}")
    frame = pd.DataFrame(
        {
            "benchmark": items["benchmark"].astype(str) if "benchmark" in items.columns else "",
            "question_id": items["question_id"].astype(str),
            "correct": items["correct_1"].fillna(False).astype(bool),
        },
        index=items.index,
    )
    fails = format_failures(items)
    frame["format_fail"] = fails.astype(object) if fails is not None else None
    return frame.drop_duplicates(["benchmark", "question_id"], keep="first")


def _share(fails: pd.Series) -> float | None:
    return None if fails.isna().any() else float(fails.astype(bool).mean())


def compare_items(
    items_a: pd.DataFrame,
    items_b: pd.DataFrame,
    *,
    label_a: str,
    label_b: str,
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> list[PairedComparison]:
    """One comparison per benchmark with common questions (in ``items_a``'s benchmark order).

    Items need ``question_id`` and ``correct_1``; ``benchmark`` (else one unnamed benchmark)
    and ``extracted_1`` (for format failures) are optional. A question id repeated within a
    benchmark counts once (its first record).
    """
    a, b = _prepare(items_a, label_a), _prepare(items_b, label_b)
    joined = a.merge(b, on=["benchmark", "question_id"], suffixes=("_a", "_b"), sort=False)
    out: list[PairedComparison] = []
    for bench in dict.fromkeys(a["benchmark"]):
        pairs = joined[joined["benchmark"] == bench]
        if pairs.empty:
            continue
        ca, cb = pairs["correct_a"].to_numpy(bool), pairs["correct_b"].to_numpy(bool)
        r2w, w2r = int((ca & ~cb).sum()), int((~ca & cb).sum())
        diff = (w2r - r2w) / len(pairs)  # = pass_b - pass_a, without float cancellation
        low, high = paired_bootstrap_ci(ca, cb, n_boot=n_boot, seed=seed, level=level)
        out.append(
            PairedComparison(
                benchmark=bench,
                label_a=label_a,
                label_b=label_b,
                n=len(pairs),
                pass_a=float(ca.mean()),
                pass_b=float(cb.mean()),
                diff=diff,
                ci_low=low,
                ci_high=high,
                level=level,
                n_boot=n_boot,
                seed=seed,
                p_mcnemar=mcnemar_exact(r2w, w2r),
                right_to_wrong=r2w,
                wrong_to_right=w2r,
                format_fail_a=_share(pairs["format_fail_a"]),
                format_fail_b=_share(pairs["format_fail_b"]),
            )
        )
    return out


def format_diff_ci(c: PairedComparison) -> str:
    """``+12.5 [+2.0, +25.0]``: the difference and its CI in percentage points."""

    def pp(value: float) -> str:
        return f"{100 * value:+.1f}"

    return f"{pp(c.diff)} [{pp(c.ci_low)}, {pp(c.ci_high)}]"


def format_p(p: float) -> str:
    """A p-value with 3 significant digits (scientific below 1e-4)."""
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"
