"""Typed configuration for every stage, with presets, YAML files and dotted overrides.

Precedence: model defaults -> preset -> YAML file (``--config``) -> ``--set key=value``.
Owns validation and the resolved-YAML view; knows nothing about running stages.
Unknown keys and bad values raise ``ConfigError`` naming the dotted key.

:mod:`~sphere_core.config.sections` holds the typed pydantic sections and ``SphereConfig``;
:mod:`~sphere_core.config.resolve` holds merging, ``--set`` parsing, validation and
``resolve_config``. Callers import everything from ``sphere_core.config``.
"""

from __future__ import annotations

# Sections first: modules that resolve's registries pull in import SphereConfig from here.
from sphere_core.config.sections import (
    EMBEDDED,
    EMBEDDED_SMALL,
    DataConfig,
    EvaluationConfig,
    EvolutionConfig,
    GradingConfig,
    ModelsConfig,
    ModelSpec,
    OrchestrationConfig,
    ORMConfig,
    PairsConfig,
    PRMConfig,
    RewardConfig,
    RoutingConfig,
    SearchConfig,
    Section,
    SphereConfig,
    StorageConfig,
    TrainingConfig,
)

# isort: split
from sphere_core.config.resolve import (
    PRESETS,
    apply_override,
    check_registered_names,
    deep_merge,
    resolve_config,
    validate,
)

__all__ = [
    "EMBEDDED",
    "EMBEDDED_SMALL",
    "PRESETS",
    "DataConfig",
    "EvaluationConfig",
    "EvolutionConfig",
    "GradingConfig",
    "ModelSpec",
    "ModelsConfig",
    "ORMConfig",
    "OrchestrationConfig",
    "PRMConfig",
    "PairsConfig",
    "RewardConfig",
    "RoutingConfig",
    "SearchConfig",
    "Section",
    "SphereConfig",
    "StorageConfig",
    "TrainingConfig",
    "apply_override",
    "check_registered_names",
    "deep_merge",
    "resolve_config",
    "validate",
]
