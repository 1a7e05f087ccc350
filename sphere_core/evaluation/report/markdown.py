"""Markdown helpers of the report: tables, numbers, headings, clipped and fenced texts, and
:class:`Figures` (where a section's PNG goes and the markdown line that shows it)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

REPORT_DIR = "report"
PROMPT_CHARS, ANSWER_HEAD, ANSWER_TAIL = 800, 900, 500
PLOT_ERRORS = (ValueError, OSError)
"""A plot that fails with one of these becomes a note in the report; others are bugs."""


def md_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def fmt(value: Any) -> str:
    """A table cell: ``–`` for missing, 4 significant digits for floats, pipes escaped."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def pct(value: Any) -> str:
    """A share as ``12.3%`` (``–`` when missing)."""
    return "–" if value is None or pd.isna(value) else f"{100 * float(value):.1f}%"


def num(value: Any) -> str:
    """A number with 4 significant digits (``–`` when missing)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{float(value):.4g}"


def heading(level: int, text: str) -> str:
    return "#" * level + " " + text


def messages(value: Any) -> list[dict]:
    """A TRL conversational message list (a plain string is one assistant message)."""
    if value is None or isinstance(value, str):
        return [{"role": "assistant", "content": value or ""}]
    try:
        return [dict(m) for m in list(value)]
    except (TypeError, ValueError):
        return []


def last_content(value: Any, role: str | None = None) -> str:
    """The content of the last message (of ``role`` when given)."""
    for message in reversed(messages(value)):
        if role is None or message.get("role") == role:
            return str(message.get("content") or "")
    return ""


def clip(text: str, head: int, tail: int = 0) -> str:
    """``text`` cut in the middle when longer than ``head + tail`` characters (says how much)."""
    text = text.strip()
    if len(text) <= head + tail + 40:
        return text
    cut = len(text) - head - tail
    return (
        text[:head].rstrip()
        + f"\n[... {cut} characters omitted ...]\n"
        + (text[-tail:].lstrip() if tail else "")
    )


def fenced(text: str) -> str:
    """``text`` in a code fence longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


@dataclass
class Figures:
    """Where PNGs go and which were written (the others in ``report/`` are stale)."""

    run: Path
    prefix: str = ""
    written: list[Path] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return self.run / REPORT_DIR

    def draw(self, name: str, alt: str, fn: Callable[[Path], Path]) -> list[str]:
        """Markdown for the plot ``fn`` writes to ``report/<prefix><name>.png`` (a note if it
        fails)."""
        path = self.dir / f"{self.prefix}{name}.png"
        try:
            fn(path)
        except PLOT_ERRORS as err:
            log.warning("report: plot %s failed: %s", path, err)
            return [f"_The plot {path.name} could not be drawn: {err}_", ""]
        self.written.append(path)
        return [f"![{alt}]({path.relative_to(self.run).as_posix()})", ""]

    def remove_stale(self) -> None:
        keep = set(self.written)
        for png in self.dir.glob("*.png"):
            if png not in keep:
                png.unlink(missing_ok=True)
