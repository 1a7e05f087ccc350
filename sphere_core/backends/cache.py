"""Process-wide caches of live backends, so tasks pass only config and load models once.

Owns: one generator per (ModelSpec JSON, home), one PRM per (config, home),
one ORM per (config, home, PRM instance); thread-safe creation; ``clear_caches``.
Does not own any backend implementation (they come from the registry by name).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sphere_core.backends.base import ORM, PRM, Generator
from sphere_core.backends.registry import lookup
from sphere_core.config import ModelSpec, SphereConfig

log = logging.getLogger(__name__)
_LOCK = threading.RLock()
_GENERATORS: dict[tuple[str, str], Generator] = {}
_PRMS: dict[tuple[str, str], PRM] = {}
_ORMS: dict[tuple[str, str, int], ORM] = {}


def _get(store: dict, key: tuple, build: Callable[[], Any]) -> Any:
    with _LOCK:  # reentrant: a PRM factory may itself call get_generator
        if key not in store:
            store[key] = build()
        return store[key]


def get_generator(spec: ModelSpec, home: Path) -> Generator:
    key = (spec.model_dump_json(), str(Path(home).resolve()))
    return _get(
        _GENERATORS, key, lambda: lookup("generator", spec.backend)(spec=spec, home=Path(home))
    )


def _cfg_key(cfg: SphereConfig) -> str:
    # a PRM/ORM may read any section (its model, the policy, search.step_delimiter, grading);
    # keying on the whole config is always correct and a pipeline uses one config anyway
    return json.dumps(cfg.to_dict(), sort_keys=True)


def get_prm(cfg: SphereConfig, home: Path) -> PRM:
    key = (_cfg_key(cfg), str(Path(home).resolve()))
    return _get(_PRMS, key, lambda: lookup("prm", cfg.prm.kind)(cfg=cfg, home=Path(home)))


def get_orm(cfg: SphereConfig, home: Path, prm: PRM) -> ORM:
    key = (_cfg_key(cfg), str(Path(home).resolve()), id(prm))
    return _get(_ORMS, key, lambda: lookup("orm", cfg.orm.kind)(cfg=cfg, home=Path(home), prm=prm))


def clear_caches() -> None:
    """Drop every cached backend (closing those that can be closed)."""
    with _LOCK:
        for store in (_GENERATORS, _PRMS, _ORMS):
            for backend in store.values():
                close = getattr(backend, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception as err:  # noqa: BLE001 - closing is best effort
                        log.warning("closing %s failed: %s", type(backend).__name__, err)
            store.clear()
