"""Name -> factory registries for generator, PRM and ORM backends.

One style of registration: each implementation module decorates its factory,

    @register_prm("judge")
    def _factory(cfg: SphereConfig, home: Path) -> JudgePRM: ...

and ``BUILTIN_BACKENDS`` below is the one table saying which module provides a built-in
name, so a lookup imports only the module it needs (importing this registry stays cheap: no
torch). Adding a backend is one new module plus one line in that table. Test doubles register
through the same functions (``register_generator("fake", factory)``) without a table entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sphere_core.errors import BackendError

KINDS = ("generator", "prm", "orm")

BUILTIN_BACKENDS: dict[tuple[str, str], str] = {
    ("generator", "hf"): "sphere_core.backends.hf",
    ("generator", "vllm"): "sphere_core.backends.vllm_backend",
    ("generator", "openai-compatible"): "sphere_core.backends.openai_compat",
    ("prm", "judge"): "sphere_core.backends.prm_judge",
    ("prm", "mc-rollout"): "sphere_core.backends.prm_rollout",
    ("prm", "outcome"): "sphere_core.backends.prm_simple",
    ("prm", "random"): "sphere_core.backends.prm_simple",
    ("prm", "qwen-prm"): "sphere_core.backends.qwen_prm",
    ("orm", "prm-last"): "sphere_core.backends.orm",
    ("orm", "verifier"): "sphere_core.backends.orm",
}
"""(kind, name) -> the module whose import registers that backend."""

_REGISTRIES: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}

Factory = Callable[..., Any]


def _register(kind: str, name: str, factory: Factory | None):
    def add(f: Factory) -> Factory:
        _REGISTRIES[kind][name] = f
        return f

    return add if factory is None else add(factory)


def register_generator(name: str, factory: Factory | None = None):
    """``@register_generator(name)`` on a ``factory(spec, home)``, or a direct call."""
    return _register("generator", name, factory)


def register_prm(name: str, factory: Factory | None = None):
    """``@register_prm(name)`` on a ``factory(cfg, home)``, or a direct call."""
    return _register("prm", name, factory)


def register_orm(name: str, factory: Factory | None = None):
    """``@register_orm(name)`` on a ``factory(cfg, home, prm)``, or a direct call."""
    return _register("orm", name, factory)


def lookup(kind: str, name: str) -> Factory:
    registry = _REGISTRIES[kind]
    module = BUILTIN_BACKENDS.get((kind, name))
    if name not in registry and module is not None:
        importlib.import_module(module)
        if name not in registry:
            raise BackendError(
                f"{module} does not register the {kind} backend {name!r} "
                "(fix BUILTIN_BACKENDS or the module's @register line)"
            )
    if name not in registry:
        raise BackendError(f"unknown {kind} backend {name!r}; known: {', '.join(available(kind))}")
    return registry[name]


def available(kind: str) -> list[str]:
    builtin = {name for k, name in BUILTIN_BACKENDS if k == kind}
    return sorted(set(_REGISTRIES[kind]) | builtin)
