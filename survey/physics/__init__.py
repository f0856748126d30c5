"""Forward operators: a registry of modality name -> builder taking keyword parameters.

`make_physics("mri", size=64, ratio=0.25, mask="gaussian-lines", seed=0)` returns a
`LinearPhysics`; every registered kind passes the adjointness test in tests/test_physics.py. An
operator also owns the facts the tasks need (`measured_mask`, `sweep_axes` / `at_level`,
`attack_gradient`, `reference_defaults`), so a new operator is its module plus one line here, and
every registry-driven test (tests/test_physics.py, tests/test_task_contract.py) covers it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Callable

from survey.physics.base import LinearPhysics

# kind -> "module:builder"; imported lazily so `survey --help` stays fast.
_REGISTRY: dict[str, str] = {
    "mri": "survey.physics.mri:build",
    "pmri": "survey.physics.pmri:build",
    "radon": "survey.physics.radon:build",
    "denoise": "survey.physics.denoise:build",
}


def physics_kinds() -> list[str]:
    return sorted(_REGISTRY)


def _builder(kind: str) -> Callable[..., LinearPhysics]:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown physics kind {kind!r}; choose one of {physics_kinds()}")
    module, name = _REGISTRY[kind].split(":")
    return getattr(import_module(module), name)


def make_physics(kind: str, **params) -> LinearPhysics:
    """Build the operator `kind` from keyword parameters (size, ratio, mask, seed, coils, views...)."""
    return _builder(kind)(**params)


__all__ = ["LinearPhysics", "make_physics", "physics_kinds"]
