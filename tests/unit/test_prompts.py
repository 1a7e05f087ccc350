"""Prompts: Table 6 text verbatim from the paper, and the chat message structure."""

from __future__ import annotations

from pathlib import Path

import pytest

from sphere_core.prompts import (
    CORRECTION_PROMPT,
    SYSTEM_PROMPT,
    TEMPLATES,
    correction_messages,
    solve_messages,
)

PAPER = Path(__file__).resolve().parents[2].parent / "shared" / "paper" / "sphere-paper.md"


def _table6() -> dict[str, str]:
    """Rebuild the two Table 6 prompts from the paper's markdown (tab-indented table rows)."""
    lines = PAPER.read_text(encoding="utf-8").splitlines()
    start = lines.index("Stage\tPrompt")
    prompts: dict[str, list[str]] = {}
    current = None
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        head, _, text = line.partition("\t")
        if head:
            current = head
        prompts.setdefault(current, []).append(text.strip())
    return {k: " ".join(v).replace("\\$", "$") for k, v in prompts.items()}


@pytest.mark.needs_shared
def test_prompts_are_table6_verbatim():
    table = _table6()
    assert SYSTEM_PROMPT == table["Self Generation"]
    assert CORRECTION_PROMPT == table["Self Correction"]
    assert TEMPLATES == {"self_generation": SYSTEM_PROMPT, "self_correction": CORRECTION_PROMPT}
    for text in (SYSTEM_PROMPT, CORRECTION_PROMPT):
        assert '"Final Answer: The final answer is $answer$. I hope it is correct."' in text


def test_solve_messages():
    msgs = solve_messages("What is 2+3?")
    assert msgs == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "What is 2+3?"},
    ]
    assert solve_messages("p", system_prompt="custom")[0]["content"] == "custom"


def test_correction_messages():
    msgs = correction_messages("What is 2+3?", "2+3=6.\n\nFinal Answer: The final answer is $6$.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[:2] == solve_messages("What is 2+3?")
    assert msgs[2]["content"].startswith("2+3=6.")
    assert msgs[3] == {"role": "user", "content": CORRECTION_PROMPT}


def test_messages_are_fresh_lists():
    a, b = solve_messages("p"), solve_messages("p")
    a[0]["content"] = "changed"
    assert b[0]["content"] == SYSTEM_PROMPT


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_inputs_rejected(bad):
    with pytest.raises(ValueError, match="problem"):
        solve_messages(bad)
    with pytest.raises(ValueError, match="wrong_solution"):
        correction_messages("p", bad)


@pytest.mark.slow
def test_embedded_tokenizer_chat_template():
    """The embedded SmolLM2 chat template renders both message lists, roles in order."""
    from transformers import AutoTokenizer

    from sphere_core.backends import embedded

    gguf = embedded.embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    text = tok.apply_chat_template(
        correction_messages("What is 2+3?", "It is 6."), tokenize=False, add_generation_prompt=True
    )
    order = [text.index(s) for s in (SYSTEM_PROMPT, "What is 2+3?", "It is 6.", CORRECTION_PROMPT)]
    assert order == sorted(order)
    assert text.rstrip().endswith("assistant")
