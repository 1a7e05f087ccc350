"""Name -> factory registries for generator, PRM and ORM backends.

Real backends register here at import of their module; test doubles register through the
same functions (``register_generator("fake", ...)``). Lookups import the built-in backend
modules lazily so that importing the registry stays cheap (no torch at import).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sphere_core.errors import BackendError

_BUILTIN_MODULES = {
    "generator": {
        "hf": "sphere_core.backends.hf",
        "vllm": "sphere_core.backends.vllm_backend",
        "openai-compatible": "sphere_core.backends.openai_compat",
    },
    "prm": {
        "judge": "sphere_core.backends.prm",
        "mc-rollout": "sphere_core.backends.prm",
        "qwen-prm": "sphere_core.backends.qwen_prm",
        "outcome": "sphere_core.backends.prm",
        "random": "sphere_core.backends.prm",
    },
    "orm": {
        "prm-last": "sphere_core.backends.orm",
        "verifier": "sphere_core.backends.orm",
    },
}

_REGISTRIES: dict[str, dict[str, Callable[..., Any]]] = {"generator": {}, "prm": {}, "orm": {}}


def _register(kind: str, name: str, factory: Callable[..., Any]) -> Callable[..., Any]:
    _REGISTRIES[kind][name] = factory
    return factory


def register_generator(name: str, factory: Callable[..., Any] | None = None):
    if factory is None:
        return lambda f: _register("generator", name, f)
    return _register("generator", name, factory)


def register_prm(name: str, factory: Callable[..., Any] | None = None):
    if factory is None:
        return lambda f: _register("prm", name, f)
    return _register("prm", name, factory)


def register_orm(name: str, factory: Callable[..., Any] | None = None):
    if factory is None:
        return lambda f: _register("orm", name, f)
    return _register("orm", name, factory)


def lookup(kind: str, name: str) -> Callable[..., Any]:
    registry = _REGISTRIES[kind]
    if name not in registry and name in _BUILTIN_MODULES[kind]:
        importlib.import_module(_BUILTIN_MODULES[kind][name])
    if name not in registry:
        known = sorted(set(registry) | set(_BUILTIN_MODULES[kind]))
        raise BackendError(f"unknown {kind} backend {name!r}; known: {', '.join(known)}")
    return registry[name]


def available(kind: str) -> list[str]:
    return sorted(set(_REGISTRIES[kind]) | set(_BUILTIN_MODULES[kind]))
