"""The report's sections, in the order they appear.

A section is a function that returns markdown lines (ending with an empty line):

- a *run section* ``(run: RunParts, figs: Figures) -> list[str]`` appears once, at the top;
- a *round section* ``(data: RoundData, figs: Figures, level: int) -> list[str]`` appears
  once per round, with headings of ``level`` (2 for a one-round run, 3 under "Round r");
- a *rounds section* (a run section) appears only in a run with more than one round, before
  the per-round sections.

A new section is one function (in a module here, named after what it shows and not after
another library module: ``routing_pairs``, not ``routing``) plus one line in the matching
tuple below. It says in its own text when its data is missing; plots go through
``figs.draw(name, alt, fn)``. Table maths goes in ``report/tables.py``, reading extra data in
``report/loading.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from sphere_core.evaluation.report.loading import RoundData, RunParts
from sphere_core.evaluation.report.markdown import Figures
from sphere_core.evaluation.report.sections import (
    accuracy,
    examples,
    overview,
    paired_statistics,
    prm_calibration,
    rounds,
    routing_pairs,
    training,
)

RunSection = Callable[[RunParts, Figures], list[str]]
RoundSection = Callable[[RoundData, Figures, int], list[str]]

RUN_SECTIONS: tuple[RunSection, ...] = (
    overview.header,
    overview.setup,
)
ROUNDS_SECTIONS: tuple[RunSection, ...] = (rounds.rounds,)
ROUND_SECTIONS: tuple[RoundSection, ...] = (
    routing_pairs.routing,
    routing_pairs.rewards,
    prm_calibration.calibration,
    training.dpo,
    accuracy.evaluation,
    paired_statistics.statistics,
    examples.examples,
)
