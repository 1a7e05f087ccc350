"""Final-answer extraction from model text and gold solutions, in linear time.

Owns the string side of grading: the paper's ``Final Answer: The final answer is $x$. I hope it
is correct.`` sentence, brace-matched ``\\boxed{}``/``\\fbox{}`` (the last one), GSM8K ``####``
solutions, the ``last_number`` fallback, ``has_final_answer`` and the normalisation used by the
exact-match fast path. It does not decide mathematical equivalence (see ``grader``), and it does
not enforce a deadline (the grading worker pool does).

Every function here runs in time linear in its input, whatever the input: one left-to-right
token scan matches all braces at once (no per-``\\boxed`` rescans), each "final answer" marker
looks at most ``MAX_SENTENCE_CHARS`` characters ahead and never past the next marker, and no
regular expression re-scans a run it has already passed (possessive quantifiers where a match
attempt could otherwise backtrack over a long run). ``extract_answer`` never returns an answer
longer than ``MAX_ANSWER_CHARS``, nor a ``last_number`` longer than ``MAX_NUMBER_CHARS``.
"""

from __future__ import annotations

import re

FALLBACKS = ("last_number", "none")

MAX_ANSWER_CHARS = 1000
"""Longest extracted answer; the longest gold answer in the packaged data sets is 198."""
MAX_SENTENCE_CHARS = 4000
"""How far past a "final answer" marker its sentence may reach."""
MAX_NUMBER_CHARS = 100
"""Longest number the ``last_number`` fallback returns (a longer digit run is not an answer)."""

_FINAL_RE = re.compile(
    r"final\s++answer\s*+(?:is\b\s*+:?|:)\s*+(?:the\s++final\s++answer\s++is\b\s*+:?)?",
    re.IGNORECASE,
)
_HOPE_RE = re.compile(r"I\s++hope\s++it\s++is\s++correct", re.IGNORECASE)
# One token per box command (with the spaces after it), escaped character, or brace.
_TOKEN_RE = re.compile(r"\\(?:boxed|fbox)(?!\w) *+|\\.|[{}]", re.DOTALL)
_BARE_RE = re.compile(r"[^\s$]*+")  # "\boxed 5": the content runs up to whitespace or $
_NONSPACE_RE = re.compile(r"\S")
_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL_RE = re.compile(r"-?\d+\.\d*")
_TEMPLATE_ECHO = {"answer", "\\text{answer}", "x"}
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_DOLLAR_RE = re.compile(r"(?<!\\)\$\$?+")
# A word of prose: two or more letters, not a LaTeX command (\frac) and not inside a longer word.
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}+")
_COMMAND_RE = re.compile(r"\\[A-Za-z]")
_NUMBER_UNIT_RE = re.compile(r"-?[\d.,]++\s++[A-Za-z]{3,}+(?:\s++[A-Za-z]++)*+\.?")
_MATH_WORDS = frozenset(
    ("sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh")
    + ("tanh", "log", "ln", "lg", "exp", "lim", "max", "min", "gcd", "lcm", "mod", "det")
    + ("deg", "pi", "dx", "dy", "dt")
)
_TAIL_STRIP = " \t\n:=,;.!"


# -- \boxed{} ---------------------------------------------------------------------------------
def _box_spans(text: str) -> list[tuple[int, int, int]]:
    """``(command_start, content_start, content_end)`` of every complete box, in one pass.

    Braces are matched with one stack for the whole text; an escaped brace (``\\{``) does not
    count, and a ``}`` with nothing open is ignored.
    """
    spans: list[tuple[int, int, int]] = []
    stack: list[tuple[int, int] | None] = []  # per open brace: (command start, brace) of a box
    box_brace, box_start = -1, -1  # the "{" that opens the box command seen last
    for match in _TOKEN_RE.finditer(text):
        start, end = match.span()
        ch = text[start]
        if ch == "{":
            stack.append((box_start, start) if start == box_brace else None)
        elif ch == "}":
            if stack:
                opened = stack.pop()
                if opened is not None:
                    spans.append((opened[0], opened[1] + 1, start))
        elif end - start > 2:  # \boxed / \fbox, with the spaces after it
            if end < len(text) and text[end] == "{":
                box_brace, box_start = end, start
            elif text[end - 1] == " ":  # "\boxed 5" form
                bare = _BARE_RE.match(text, end)
                assert bare is not None
                spans.append((start, end, bare.end()))
    return spans


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (``\\boxed 5`` too).

    "Last" is by where the command starts; boxes with blank content are skipped.
    """
    for _, start, end in sorted(_box_spans(text), reverse=True):
        first = _NONSPACE_RE.search(text, start, end)
        if first is not None:
            return text[first.start() : end].strip()
    return None


def _has_box(text: str) -> bool:
    return "\\boxed" in text or "\\fbox" in text


# -- the paper's final-answer sentence ---------------------------------------------------------
def _math_content(s: str) -> str | None:
    """If ``s`` opens with a math delimiter, the math up to its closing one (or to the end)."""
    for left, right in _MATH_DELIMS:
        if s.startswith(left):
            end = _next_unescaped(s, right, len(left))
            return s[len(left) : end] if end > 0 else s[len(left) :]
    return None


def _next_unescaped(text: str, token: str, start: int) -> int:
    i = text.find(token, start)
    while i > 0 and text[i - 1] == "\\":
        i = text.find(token, i + 1)
    return i


def _last_inline_math(s: str) -> str | None:
    """Content of the last ``$...$`` / ``\\(...\\)`` inside a sentence, if any."""
    best_start, best = -1, None
    dollars = list(_DOLLAR_RE.finditer(s))
    for left, right in zip(dollars[0::2], dollars[1::2]):  # "$"/"$$" delimiters pair up in order
        if s[left.end() : right.start()].strip():
            best_start, best = left.start(), s[left.end() : right.start()]
    i = s.find("\\(")
    while i >= 0:
        j = s.find("\\)", i + 2)
        if j < 0:
            break
        if i > best_start and s[i + 2 : j].strip():
            best_start, best = i, s[i + 2 : j]
        i = s.find("\\(", j + 2)
    return best


def _clean(answer: str) -> str | None:
    s = answer.strip()
    if _has_box(s):
        boxed = last_boxed(s)
        if boxed is not None:
            s = boxed
    s = s.strip().rstrip(".").strip()
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)]
    s = s.strip().rstrip(".").strip()
    if not s or s.lower() in _TEMPLATE_ECHO or s in {"$", "$$"} or len(s) > MAX_ANSWER_CHARS:
        return None
    return s


def _prose_words(s: str) -> list[str]:
    return [w for w in _WORD_RE.findall(s) if w.lower() not in _MATH_WORDS]


def is_prose(answer: str) -> bool:
    """True when an "answer" reads as a sentence ("The total number of sides is 8", "8 sides")
    rather than a math expression (``\\frac{1}{2}``, ``x^2 + 7x``, ``5\\text{ cm}``, ``Evelyn``).

    Anything with a LaTeX command is math, whatever words it holds (``\\begin{pmatrix}``).
    """
    if _COMMAND_RE.search(answer):
        return False
    long_words = [w for w in _prose_words(answer) if len(w) >= 3]
    return len(long_words) >= 2 or (
        len(long_words) == 1 and _NUMBER_UNIT_RE.fullmatch(answer.strip()) is not None
    )


def _prose_value(answer: str) -> str:
    """The math value a prose answer states: what follows its last word, else its last number."""
    last_word = None
    for match in _WORD_RE.finditer(answer):
        if match.group().lower() not in _MATH_WORDS:
            last_word = match
    tail = answer[last_word.end() :] if last_word is not None else answer
    tail = tail.strip(_TAIL_STRIP)
    inner = _math_content(tail)
    if inner is not None:
        tail = inner.strip(_TAIL_STRIP)
    if tail and any(c.isdigit() for c in tail):
        return tail
    return last_number(answer) or answer


def _sentence_answer(segment: str) -> str | None:
    """The answer stated by the text that follows one "final answer" marker."""
    hope = _HOPE_RE.search(segment)
    if hope is not None:
        rest = segment[: hope.start()]
    else:
        rest = segment.split("\n\n", 1)[0]
        if not rest.lstrip().startswith(("$", "\\(", "\\[")):
            rest = rest.strip().split("\n", 1)[0]
    s = rest.strip()
    math = _math_content(s)
    if math is None and not _has_box(s):
        # Prose around inline math ("the total is $8$ dollars"): the math is the answer.
        math = _last_inline_math(s)
        if math is None:
            s = _DOLLAR_RE.sub("", s)  # a stray "$" ("5$") is not part of the answer
    answer = _clean(math if math is not None else s)
    if answer is not None and not _has_box(s) and is_prose(answer):
        answer = _clean(_prose_value(answer))
    return answer


def final_answer_sentence(text: str) -> str | None:
    """Answer from the last well-formed "Final Answer: The final answer is ..." sentence."""
    markers = list(_FINAL_RE.finditer(text))
    for k in range(len(markers) - 1, -1, -1):
        start = markers[k].end()
        end = markers[k + 1].start() if k + 1 < len(markers) else len(text)
        answer = _sentence_answer(text[start : min(end, start + MAX_SENTENCE_CHARS)])
        if answer is not None:
            return answer
    return None


# -- GSM8K and the last-number fallback --------------------------------------------------------
def gsm8k_answer(solution: str) -> str | None:
    """Text after the last ``####`` of a GSM8K solution, thousands commas removed."""
    if "####" not in solution:
        return None
    tail = solution.rsplit("####", 1)[1].strip()
    answer = tail.splitlines()[0].strip() if tail else ""
    if _THOUSANDS_RE.fullmatch(answer):
        answer = answer.replace(",", "")
    return answer or None


def last_number(text: str) -> str | None:
    """The last number in ``text`` (thousands commas removed), or ``None``."""
    last = None
    for match in _NUMBER_RE.finditer(text):
        last = match
    if last is None or last.end() - last.start() > MAX_NUMBER_CHARS:
        return None
    return last.group().replace(",", "")


# -- public entry points -----------------------------------------------------------------------
def extract_answer(text: str | None, fallback: str = "last_number") -> str | None:
    """Final answer of a model solution, or ``None`` when there is none.

    Order: the paper's Final Answer sentence, then the last ``\\boxed{}``/``\\fbox{}``, then the
    fallback (``last_number``: the last number in the text; ``none``: no answer). A sentence
    that states its answer in prose ("... is The total number of sides is 8") gives its math
    value (``8``). Linear time in ``len(text)``.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown answer fallback {fallback!r}; choose one of {FALLBACKS}")
    if not text:
        return None
    answer = final_answer_sentence(text)
    if answer is not None:
        return answer
    if _has_box(text):
        boxed = last_boxed(text)
        if boxed is not None:
            cleaned = _clean(boxed)
            if cleaned is not None:
                return cleaned
    if fallback == "last_number":
        return last_number(text)
    return None


def has_final_answer(text: str | None) -> bool:
    """True when ``text`` states a final answer: a paper-format "Final Answer: The final answer
    is ..." sentence or a ``\\boxed{}`` with content (what strict extraction accepts)."""
    return extract_answer(text, fallback="none") is not None


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
