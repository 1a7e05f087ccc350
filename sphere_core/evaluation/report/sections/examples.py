"""Per-round section with one example pair per stage and route: its routing reason, the
prompt, and the chosen and rejected texts (clipped)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sphere_core.evaluation import plots
from sphere_core.evaluation.report.loading import RoundData
from sphere_core.evaluation.report.markdown import (
    ANSWER_HEAD,
    ANSWER_TAIL,
    PROMPT_CHARS,
    Figures,
    clip,
    fenced,
    fmt,
    heading,
    last_content,
    messages,
    num,
)
from sphere_core.evaluation.report.tables import example_pairs


def _reason(routing: pd.DataFrame, question_id: Any, stage: Any) -> str | None:
    if routing.empty:
        return None
    hit = routing[(routing["question_id"] == question_id) & (routing["stage"] == stage)]
    return str(hit["reason"].iloc[0]) if len(hit) and hit["reason"].iloc[0] else None


def _prompt_lines(prompt: Any) -> list[str]:
    """The prompt's last user message, preceded by the problem (first user message) when the
    prompt has more than one user turn (the correction stage's prompt ends with its
    instruction)."""
    users = [m for m in messages(prompt) if m.get("role") == "user"]
    if not users:
        return ["Prompt: _no user message_", ""]
    out = []
    if len(users) > 1:
        out += [
            "Problem (first user message):",
            "",
            fenced(clip(str(users[0].get("content") or ""), PROMPT_CHARS)),
            "",
        ]
    return out + [
        "Prompt (last user message):",
        "",
        fenced(clip(str(users[-1].get("content") or ""), PROMPT_CHARS)),
        "",
    ]


def _pair_lines(pair: pd.Series, label: str, reason: str | None) -> list[str]:
    return [
        (
            f"**{label} · {pair['route']}** ({pair['granularity']}, "
            f"{pair.get('split', 'train')} split): question `{pair['question_id']}`, gold "
            f"`{fmt(pair['gold_answer'])}`; chosen answer `{fmt(pair['answer_chosen'])}` "
            f"(search reward {num(pair['reward_chosen'])}), rejected answer "
            f"`{fmt(pair['answer_rejected'])}` (search reward {num(pair['reward_rejected'])})."
        ),
        "",
        f"Why: {reason}" if reason else "Why: _no routing reason recorded for this question._",
        "",
        "<details><summary>Prompt (last user message), chosen and rejected</summary>",
        "",
        *_prompt_lines(pair["prompt"]),
        "Chosen:",
        "",
        fenced(clip(last_content(pair["chosen"]), ANSWER_HEAD, ANSWER_TAIL)),
        "",
        "Rejected:",
        "",
        fenced(clip(last_content(pair["rejected"]), ANSWER_HEAD, ANSWER_TAIL)),
        "",
        "</details>",
        "",
    ]


def examples(data: RoundData, figs: Figures, level: int) -> list[str]:
    """One pair per stage and route, with why it was routed that way."""
    out = [heading(level, "Example pairs (one per stage and route)"), ""]
    if data.pairs.empty:
        return out + ["_No preference pairs in this round._", ""]
    if not data.pairs_have_text:
        return out + [
            ("_The pair texts are not on disk (only the store's pair rows): no examples._"),
            "",
        ]
    labels = plots.stage_labels(data.pairs["stage"].dropna().unique())
    for pair in example_pairs(data.pairs):
        reason = _reason(data.routing, pair["question_id"], pair["stage"])
        out += _pair_lines(pair, labels.get(pair["stage"], pair["stage"]), reason)
    return out
