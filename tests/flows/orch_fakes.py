"""Orchestration test doubles on top of ``tests.fakes`` (registered through the registry).

- ``fake-slow``: the scripted fake generator, sleeping ``SPHERE_FAKE_DELAY_S`` seconds per
  ``generate_steps`` call (a fixed per-call cost: realistic timing, deterministic output); with
  ``SPHERE_FAKE_CALLS_FILE`` set, every call appends one line there (work counted across
  processes).
- ``fake-flaky``: loading it fails the first ``SPHERE_FAKE_FAIL_LOADS`` times (default 1),
  counted in a file under ``$SPHERE_HOME`` so the count survives task retries and processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sphere_core.backends.registry import register_generator
from tests.fakes import FakeGenerator

FLAKY_COUNTER = "fake-flaky-loads.txt"


class SlowFakeGenerator(FakeGenerator):
    name = "fake-slow"

    def generate_steps(self, prompts, n, temperature, stop, max_tokens, **kwargs):
        time.sleep(float(os.environ.get("SPHERE_FAKE_DELAY_S", "0.05")))
        calls = os.environ.get("SPHERE_FAKE_CALLS_FILE")
        if calls:
            with open(calls, "a") as fh:  # one short append per call: atomic enough for counting
                fh.write(f"{os.getpid()} {len(prompts)}\n")
        return super().generate_steps(prompts, n, temperature, stop, max_tokens, **kwargs)


def flaky_loads(home: Path) -> int:
    path = Path(home) / FLAKY_COUNTER
    return int(path.read_text()) if path.exists() else 0


def _flaky_factory(spec, home):
    attempt = flaky_loads(home) + 1
    (Path(home) / FLAKY_COUNTER).write_text(str(attempt))
    if attempt <= int(os.environ.get("SPHERE_FAKE_FAIL_LOADS", "1")):
        raise ConnectionError(
            f"fake-flaky: generator server not reachable (load attempt {attempt})"
        )
    return FakeGenerator(spec.path)


register_generator("fake-slow", lambda spec, home: SlowFakeGenerator(spec.path))
register_generator("fake-flaky", _flaky_factory)

# the scenarios of one run: every routing path the fakes script, 2 of each -> 16 questions
SCENARIO_MIX = [
    s
    for s in (
        "contrastive",
        "inverted",
        "corrected",
        "unresolved",
        "diverse",
        "no_error",
        "noanswer",
        "contrastive",
    )
    for _ in range(2)
]


def fake_overrides(data_path: Path, backend: str = "fake", shard_size: int = 4) -> list[str]:
    """``--set`` assignments wiring a run to the fakes (grading stays the real one)."""
    return [
        f"data.path={data_path}",
        f"models.policy.backend={backend}",
        "models.policy.path=fake-policy",
        f"models.small={{backend: {backend}, path: fake-small}}",
        "prm.kind=fake",
        "search.num_candidates=4",
        "search.max_depth=3",
        "search.max_step_tokens=16",
        "grading.workers=1",
        f"orchestration.shard_size={shard_size}",
        "orchestration.retries=2",
        "orchestration.retry_delay_s=0",
    ]
