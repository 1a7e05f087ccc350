"""The paper's prompts (Table 6) and the chat messages built from them.

Owns prompt text and message structure only; turning messages into model input through the
tokenizer's chat template is the generator backend's job (``apply_chat_template``).
The Table 6 text is verbatim (table line breaks joined with spaces, ``\\$`` unescaped).
"""

from __future__ import annotations

SYSTEM_PROMPT = (
    "You are a math expert. When you respond, respond only with the Solution of the final "
    "Problem, thinking step by step. At the end of the Solution, when you give your final "
    'answer, write it in the form "Final Answer: The final answer is $answer$. '
    'I hope it is correct."'
)
"""Table 6, Stage I (Self Generation): the system prompt for solving, training and evaluation."""

CORRECTION_PROMPT = (
    "There might be an error in the solution above because of lack of understanding of the "
    "question. Please correct the error, if any, and rewrite the solution. Only output the "
    "final solution! At the end of the Solution, when you give your final answer, write it "
    'in the form "Final Answer: The final answer is $answer$. I hope it '
    'is correct."'
)
"""Table 6, Stage II (Self Correction): the user turn after a (possibly wrong) solution."""

TEMPLATES: dict[str, str] = {
    "self_generation": SYSTEM_PROMPT,
    "self_correction": CORRECTION_PROMPT,
}

Message = dict[str, str]


def _check(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return value


def solve_messages(problem: str, system_prompt: str = SYSTEM_PROMPT) -> list[Message]:
    """``[system, user(problem)]`` — Stage 1/3 search and evaluation prompts."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": _check("problem", problem)},
    ]


def correction_messages(
    problem: str, wrong_solution: str, system_prompt: str = SYSTEM_PROMPT
) -> list[Message]:
    """``[system, user(problem), assistant(wrong_solution), user(CORRECTION_PROMPT)]`` (Stage 2)."""
    return [
        *solve_messages(problem, system_prompt),
        {"role": "assistant", "content": _check("wrong_solution", wrong_solution)},
        {"role": "user", "content": CORRECTION_PROMPT},
    ]
