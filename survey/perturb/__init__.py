"""Perturbation families: a registry of name -> builder taking keyword parameters.

`make_family("gaussian")` returns a `Family` whose `apply(y, z, severity, physics)` maps clean
measurements y and a standard Gaussian latent z (shape `latent_shape(physics)` per draw) to
perturbed measurements, deterministically (how often a perturbation at a physical severity is bad). Every registered family passes
the property tests in tests/test_perturb.py.
"""

from __future__ import annotations

from typing import Callable

from survey.perturb.base import Family, measured_mask
from survey.registry import Registry, RegistryError

#: name -> builder returning a Family; built-in ones as "module:builder", imported lazily. A new family: its
#: module plus one line here, or `@survey.perturb.register("name")` on its builder (a plugin).
FAMILIES: Registry = Registry("perturbation family", {
    "gaussian": "survey.perturb.gaussian:build",
    "poisson": "survey.perturb.poisson:build",
    "sphere": "survey.perturb.sphere:build",
    "motion": "survey.perturb.motion:build",
    "coil": "survey.perturb.coil:build",
    "off-resonance": "survey.perturb.offresonance:build",
    "spike": "survey.perturb.spike:build",
    "rings": "survey.perturb.rings:build",
    "view-jitter": "survey.perturb.jitter:build",
})
#: Decorator registering a family builder under a name.
register = FAMILIES.register


def family_names() -> list[str]:
    return FAMILIES.names()


def make_family(name: str, **params) -> Family:
    """Build the family `name` from keyword parameters (e.g. sphere: domain, real_image)."""
    try:
        builder: Callable[..., Family] = FAMILIES.get(name)
    except RegistryError as err:
        raise ValueError(str(err)) from None
    return builder(**params)


__all__ = ["FAMILIES", "Family", "family_names", "make_family", "measured_mask", "register"]
