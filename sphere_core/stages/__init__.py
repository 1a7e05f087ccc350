"""The paper's stages, one module each, and their registry (ordered).

``STAGE_MODULES`` lists the stage modules in run order; each module registers one
:class:`~sphere_core.stages.base.BaseStage` instance. Adding a stage (say a future
"hard-negative" stage consuming Stage 3's ``no_error`` questions) is one new module and one
entry in ``STAGE_MODULES``. Everything else (search, routing rows, pairs, artifacts, flows,
summaries, the report) reads stages from this registry, and so does the routing-decision
vocabulary: each stage's ``decisions`` in run order (:func:`all_decisions`).

Stage names (``stage1``, ...) are the values of the ``stage`` column in routing, tree and
pair tables and the entries of ``routing.stages`` in the config.
"""

from __future__ import annotations

import importlib

from sphere_core.errors import ConfigError

STAGE_MODULES = (
    "sphere_core.stages.generation",  # stage1: self-generation
    "sphere_core.stages.correction",  # stage2: self-correction
    "sphere_core.stages.diversity",  # stage3: diversity
)

_REGISTRY: dict = {}


def register(stage) -> None:
    """Called by each stage module for its instance (names must be unique)."""
    if stage.name in _REGISTRY and type(_REGISTRY[stage.name]) is not type(stage):
        raise ValueError(f"stage name {stage.name!r} is registered twice")
    _REGISTRY[stage.name] = stage


def _load() -> None:
    for module in STAGE_MODULES:
        importlib.import_module(module)


def all_stages() -> list:
    """Every registered stage, in run order."""
    _load()
    order = {name: i for i, name in enumerate(_REGISTRY)}
    return sorted(_REGISTRY.values(), key=lambda s: order[s.name])


def stage_names() -> list[str]:
    return [s.name for s in all_stages()]


def get_stage(name: str):
    _load()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown stage {name!r}; known: {', '.join(stage_names())}")
    return _REGISTRY[name]


def stages_for(selected: list[str]) -> list:
    """The selected stages in run order (``routing.stages``)."""
    return [s for s in all_stages() if s.name in selected]


def check_selection(selected: list[str]) -> None:
    """Raise ConfigError unless every stage exists and its upstream stage is selected too."""
    known = stage_names()
    for name in selected:
        if name not in known:
            raise ConfigError(
                f"invalid config value for 'routing.stages': unknown stage {name!r}; "
                f"known: {', '.join(known)}"
            )
    first = [s.name for s in all_stages() if s.consumes is None]
    if not any(name in selected for name in first):
        raise ConfigError(f"routing.stages must include {' or '.join(first)}")
    for stage in stages_for(selected):
        if stage.consumes is not None and stage.consumes.stage not in selected:
            raise ConfigError(
                f"routing.stages: {stage.name} needs {stage.consumes.stage} "
                f"(it takes that stage's {stage.consumes.decision!r} questions)"
            )


def stage_titles() -> dict[str, str]:
    return {s.name: s.title for s in all_stages()}


def all_decisions() -> dict:
    """Decision name -> :class:`~sphere_core.stages.base.Decision`: every stage's decisions in
    run order (first declaration wins), then the decisions any stage can emit (``error``).
    The single source of the routing-decision vocabulary (summary, report, plots)."""
    from sphere_core.stages.base import COMMON_DECISIONS

    out: dict = {}
    for decision in [d for s in all_stages() for d in s.decisions] + list(COMMON_DECISIONS):
        out.setdefault(decision.name, decision)
    return out


def decision_order(present) -> list[str]:
    """The decisions in ``present``: registry order, then unregistered ones by name (a
    decision an older or newer version wrote is shown, never dropped)."""
    present = {str(d) for d in present}
    known = [d for d in all_decisions() if d in present]
    return known + sorted(present - set(known))
