"""Forward operators: a registry of modality name -> builder taking keyword parameters.

`make_physics("mri", size=64, ratio=0.25, mask="gaussian-lines", seed=0)` returns a
`LinearPhysics`; every registered kind passes the adjointness test in tests/test_physics.py. An
operator also owns the facts the tasks need (`measured_mask`, `sweep_axes` / `at_level`,
`attack_gradient`, `reference_defaults`), so a new operator is its module plus one line here, and
every registry-driven test (tests/test_physics.py, tests/test_task_contract.py) covers it.
"""

from __future__ import annotations

from typing import Callable

from survey.physics.base import LinearPhysics
from survey.registry import Registry, RegistryError

#: kind -> builder; built-in ones as "module:builder", imported lazily so `survey --help` stays fast. A new
#: operator: its module plus one line here, or `@survey.physics.register("kind")` on its builder (a plugin).
PHYSICS: Registry = Registry("physics kind", {
    "mri": "survey.physics.mri:build",
    "pmri": "survey.physics.pmri:build",
    "radon": "survey.physics.radon:build",
    "denoise": "survey.physics.denoise:build",
})
#: Decorator registering an operator builder under a kind.
register = PHYSICS.register


def physics_kinds() -> list[str]:
    return PHYSICS.names()


def make_physics(kind: str, **params) -> LinearPhysics:
    """Build the operator `kind` from keyword parameters (size, ratio, mask, seed, coils, views...)."""
    try:
        builder: Callable[..., LinearPhysics] = PHYSICS.get(kind)
    except RegistryError as err:
        raise ValueError(str(err)) from None
    return builder(**params)


__all__ = ["LinearPhysics", "PHYSICS", "make_physics", "physics_kinds", "register"]
