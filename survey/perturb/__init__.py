"""Perturbation families: a registry of name -> builder taking keyword parameters.

`make_family("gaussian")` returns a `Family` whose `apply(y, z, severity, physics)` maps clean
measurements y and a standard Gaussian latent z (shape `latent_shape(physics)` per draw) to
perturbed measurements, deterministically (how often a perturbation at a physical severity is bad). Every registered family passes
the property tests in tests/test_perturb.py.
"""

from __future__ import annotations

from importlib import import_module
from typing import Callable

from survey.perturb.base import Family, measured_mask

# name -> "module:builder"; imported lazily.
_REGISTRY: dict[str, str] = {
    "gaussian": "survey.perturb.gaussian:build",
    "poisson": "survey.perturb.poisson:build",
    "sphere": "survey.perturb.sphere:build",
    # physical families (issue 17): patient motion, coil and field errors, detector faults
    "motion": "survey.perturb.motion:build",
    "coil": "survey.perturb.coil:build",
    "off-resonance": "survey.perturb.offresonance:build",
    "spike": "survey.perturb.spike:build",
    "rings": "survey.perturb.rings:build",
    "view-jitter": "survey.perturb.jitter:build",
}


def family_names() -> list[str]:
    return sorted(_REGISTRY)


def _builder(name: str) -> Callable[..., Family]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown perturbation family {name!r}; choose one of {family_names()}")
    module, attr = _REGISTRY[name].split(":")
    return getattr(import_module(module), attr)


def make_family(name: str, **params) -> Family:
    """Build the family `name` from keyword parameters (e.g. sphere: domain, real_image)."""
    return _builder(name)(**params)


__all__ = ["Family", "family_names", "make_family", "measured_mask"]
