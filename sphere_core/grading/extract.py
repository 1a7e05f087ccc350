"""Final-answer extraction from model text and gold solutions.

Owns the string side of grading: the paper's ``Final Answer: The final answer is $x$. I hope it
is correct.`` sentence, brace-matched ``\\boxed{}``/``\\fbox{}`` (the last one), GSM8K ``####``
solutions, the ``last_number`` fallback, and the normalisation used by the exact-match fast path.
It does not decide mathematical equivalence (see ``sphere_core.grading.grader``).
"""

from __future__ import annotations

import re

FALLBACKS = ("last_number", "none")

_FINAL_RE = re.compile(
    r"final\s+answer\s*(?:is\b\s*:?|:)\s*(?:the\s+final\s+answer\s+is\b\s*:?)?", re.IGNORECASE
)
_HOPE_RE = re.compile(r"\s*I\s+hope\s+it\s+is\s+correct", re.IGNORECASE)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL_RE = re.compile(r"-?\d+\.\d*")
_TEMPLATE_ECHO = {"answer", "\\text{answer}", "x"}


def _match_brace(text: str, open_idx: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_idx``; escaped braces do not count."""
    depth = 0
    i = open_idx
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (``\\boxed 5`` too)."""
    for match in reversed(list(_BOX_RE.finditer(text))):
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            close = _match_brace(text, i)
            if close is None:
                continue
            content = text[i + 1 : close].strip()
        elif i > match.end():  # "\boxed 5" form: up to whitespace or $
            content = re.split(r"[\s$]", text[i:], maxsplit=1)[0].strip()
        else:
            continue
        if content:
            return content
    return None


def gsm8k_answer(solution: str) -> str | None:
    """Text after the last ``####`` of a GSM8K solution, thousands commas removed."""
    if "####" not in solution:
        return None
    tail = solution.rsplit("####", 1)[1].strip()
    answer = tail.splitlines()[0].strip() if tail else ""
    if _THOUSANDS_RE.fullmatch(answer):
        answer = answer.replace(",", "")
    return answer or None


def _next_unescaped(text: str, token: str, start: int) -> int:
    i = text.find(token, start)
    while i > 0 and text[i - 1] == "\\":
        i = text.find(token, i + 1)
    return i


def _strip_dollars(segment: str) -> str:
    """Take the math between leading ``$``/``$$`` delimiters, else drop stray unescaped ``$``."""
    s = segment.strip()
    for delim in ("$$", "$"):
        if s.startswith(delim):
            end = _next_unescaped(s, delim, len(delim))
            if end > 0:
                return s[len(delim) : end]
            return s[len(delim) :]
    return re.sub(r"(?<!\\)\$", "", s)


def _clean(answer: str) -> str | None:
    s = answer.strip()
    boxed = last_boxed(s)
    if boxed is not None:
        s = boxed
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)]
    s = s.strip().rstrip(".").strip()
    if not s or s.lower() in _TEMPLATE_ECHO or s in {"$", "$$"}:
        return None
    return s


def final_answer_sentence(text: str) -> str | None:
    """Answer from the last well-formed "Final Answer: The final answer is ..." sentence."""
    for match in reversed(list(_FINAL_RE.finditer(text))):
        rest = text[match.end() :]
        hope = _HOPE_RE.search(rest)
        if hope is not None:
            rest = rest[: hope.start()]
        else:
            rest = rest.split("\n\n", 1)[0]
            if not rest.lstrip().startswith("$"):
                rest = rest.strip().split("\n", 1)[0]
        answer = _clean(_strip_dollars(rest))
        if answer is not None:
            return answer
    return None


def last_number(text: str) -> str | None:
    matches = _NUMBER_RE.findall(text)
    if not matches:
        return None
    return matches[-1].replace(",", "")


def extract_answer(text: str | None, fallback: str = "last_number") -> str | None:
    """Final answer of a model solution, or ``None`` when there is none.

    Order: the paper's Final Answer sentence, then the last ``\\boxed{}``/``\\fbox{}``, then the
    fallback (``last_number``: the last number in the text; ``none``: no answer).
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown answer fallback {fallback!r}; choose one of {FALLBACKS}")
    if not text:
        return None
    answer = final_answer_sentence(text)
    if answer is not None:
        return answer
    boxed = last_boxed(text)
    if boxed is not None:
        return _clean(boxed)
    if fallback == "last_number":
        return last_number(text)
    return None


def normalize_answer(answer: str) -> str:
    """Canonical string for the exact-match fast path ("$18.00" == "18", "2,125" == "2125")."""
    s = answer.strip()
    s = re.sub(r"(?<!\\)\$", "", s)
    s = s.replace("\\$", "")
    for cmd in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ "):
        s = s.replace(cmd, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\s+", "", s).rstrip(".")
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    if _DECIMAL_RE.fullmatch(s):
        s = s.rstrip("0").rstrip(".") or "0"
    if s in {"-0", "+0"}:
        s = "0"
    return s
