"""Grading: final-answer extraction and equivalence checking against gold answers.

``extract_answer`` / ``has_final_answer`` (linear-time string rules, ``extract``), ``Grader`` /
``get_grader`` (extraction, exact-match fast path and math-verify per item in a timeout process
pool, ``grader``, ``item``, ``pool``), ``grade_file`` (the ``sphere grade`` JSONL workflow,
``files``). Importing this package does not import math-verify.
"""

from sphere_core.grading.extract import (
    MAX_ANSWER_CHARS,
    extract_answer,
    final_answer_sentence,
    gsm8k_answer,
    has_final_answer,
    last_boxed,
    last_number,
    normalize_answer,
)
from sphere_core.grading.files import GradeFileResult, grade_file
from sphere_core.grading.grader import Grader, Verdict, close_graders, get_grader

__all__ = [
    "MAX_ANSWER_CHARS",
    "GradeFileResult",
    "Grader",
    "Verdict",
    "close_graders",
    "extract_answer",
    "final_answer_sentence",
    "get_grader",
    "grade_file",
    "gsm8k_answer",
    "has_final_answer",
    "last_boxed",
    "last_number",
    "normalize_answer",
]
