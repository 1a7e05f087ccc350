"""Test doubles for the grading pool (no tests here).

Kept in a tiny module on purpose: grading workers import the function by reference, and a
light module keeps their start-up fast.
"""

from __future__ import annotations

import os
import time


def slow_verify(prediction: str, gold: str) -> bool:
    """Hangs on "hang", raises on "boom", kills its process on "crash"; else case-insensitive
    match."""
    if prediction == "hang":
        time.sleep(60)
    if prediction == "boom":
        raise RuntimeError("bad expression")
    if prediction == "crash":
        os._exit(3)
    return prediction.upper() == gold
