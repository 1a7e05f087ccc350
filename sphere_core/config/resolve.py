"""Config resolution: presets, YAML files and dotted overrides merged, then validated.

Precedence: model defaults -> preset -> YAML file (``--config``) -> ``--set key=value``.
Owns ``deep_merge``, ``--set`` parsing, validation and its one-line error messages, and the
checks that backend, PRM/ORM, stage and benchmark names exist in their registries.
Unknown keys and bad values raise ``ConfigError`` naming the dotted key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sphere_core.backends.registry import available
from sphere_core.config.sections import SphereConfig
from sphere_core.data.benchmark_files import BENCHMARKS
from sphere_core.errors import ConfigError
from sphere_core.presets import PRESETS
from sphere_core.stages import check_selection


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_scalar(raw: str) -> Any:
    """YAML-parse a CLI value so `4`, `0.8`, `true`, `null`, `[a, b]` get their types."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_override(tree: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one ``dotted.key=value`` assignment to a plain dict (validated later)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects dotted.key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set has an empty key in {assignment!r}")
    node = tree
    fields = SphereConfig.model_fields
    model: type[BaseModel] | None = SphereConfig
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        if model is not None:
            fields = model.model_fields
            if part not in fields:
                raise ConfigError(f"unknown config key '{dotted}'")
            model = _section_type(fields[part].annotation)
        if i == len(parts) - 1:
            node[part] = _parse_scalar(raw)
        else:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
    return tree


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{loc}'"
    if not first["loc"]:  # a rule across sections
        return f"invalid config: {first['msg'].removeprefix('Value error, ')}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"invalid config value for '{loc}': {first['msg']}{shown}"


def validate(tree: dict[str, Any]) -> SphereConfig:
    """Pydantic validation, then every name that must exist in a registry."""
    try:
        cfg = SphereConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None
    check_registered_names(cfg)
    return cfg


def check_registered_names(cfg: SphereConfig) -> None:
    """Backends, PRM/ORM kinds, stages and benchmarks must be known (registries, not lists)."""

    def check(key: str, value: str, known: list[str], what: str) -> None:
        if value not in known:
            raise ConfigError(
                f"invalid config value for '{key}': unknown {what} {value!r}; "
                f"known: {', '.join(known)}"
            )

    generators = available("generator")
    specs = {
        "models.policy": cfg.models.policy,
        "models.small": cfg.models.small,
        "prm.model": cfg.prm.model,
    }
    for key, spec in specs.items():
        if spec is not None:
            check(f"{key}.backend", spec.backend, generators, "generator backend")
    check("prm.kind", cfg.prm.kind, available("prm"), "PRM")
    check("orm.kind", cfg.orm.kind, available("orm"), "ORM")
    for name in cfg.evaluation.benchmarks:
        check("evaluation.benchmarks", name, list(BENCHMARKS), "benchmark")
    check_selection(cfg.routing.stages)


def resolve_config(
    preset: str | None = None,
    file: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] | None = (),
    base: dict[str, Any] | None = None,
) -> SphereConfig:
    """The one config resolver: defaults -> ``base`` -> preset -> file -> overrides, validated.

    ``base`` is a stored config (a run's record) that the rest applies on top of; ``file`` is a
    YAML path or an already-parsed (partial) config dict, e.g. a flow parameter; ``overrides``
    are ``dotted.key=value`` strings. Unknown keys, bad values and names missing from a
    registry are a ``ConfigError`` naming the key.
    """
    tree: dict[str, Any] = copy.deepcopy(base) if base else {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        tree = deep_merge(tree, PRESETS[preset])
    if isinstance(file, dict):
        tree = deep_merge(tree, file)
    elif file:
        tree = deep_merge(tree, _read_yaml(Path(file)))
    for assignment in overrides or ():
        tree = apply_override(tree, assignment)
    return validate(tree)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded
