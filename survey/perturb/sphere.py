"""The fixed-norm ball of the Gaussian-ball test (paper Fig. 2): a random direction at a given norm.

domain="image": e Gaussian on the measured entries, v = A* e (its real part for real images),
rescaled to ||v|| = severity, y' = y + A v; domain="measurement": e rescaled to ||e|| = severity,
y' = y + e. The severity is the absolute norm (the ball task scales it by ||r|| or ||x||). The
direction depends on z only through e / ||e||, so the draw is a uniformly random direction of the
measured entries (image domain: its image under A*, renormalised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from survey.perturb.base import Family, Support, broadcast_batch, per_sample

DOMAINS = ("image", "measurement")


def _unit(v: torch.Tensor) -> torch.Tensor:
    norm = v.reshape(v.shape[0], -1).norm(dim=1).clamp(min=torch.finfo(v.real.dtype).tiny)
    return v / norm.reshape(-1, *([1] * (v.ndim - 1)))


@dataclass(kw_only=True)
class Sphere(Family):
    """Random direction at a fixed norm: `domain` "image" (v = A* e) or "measurement" (e)."""

    example_severity = 0.3  # a severity with a visible effect (survey.testing.check_family)

    domain: str = "image"
    real_image: bool = True

    name = "sphere"
    severity_name = "radius"
    identity_severity = 0.0
    differentiable = True

    def __post_init__(self):
        if self.domain not in DOMAINS:
            raise ValueError(f"Sphere.domain: {self.domain!r} is not one of {list(DOMAINS)}")

    def params(self) -> dict:
        return {"domain": self.domain, "real_image": self.real_image}

    def direction(self, z: torch.Tensor, physics, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit, shift): the unit perturbation (image or measurement shaped) and the measurement shift
        it causes (A unit, or unit itself), for a batch of latents z (B, dim); dtype/device of `like`."""
        e = Support.of(physics).scatter(z, like)
        if self.domain == "measurement":
            unit = _unit(e)
            return unit, unit
        v = physics.A_adjoint(e)
        if self.real_image and torch.is_complex(v):
            v = v.real
        unit = _unit(v)
        return unit, physics.A(unit)

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics) -> torch.Tensor:
        """y: (B or 1, *measurement_shape); z: (B, dim); severity: the norm ||v|| (or ||e||), float or (B,)."""
        y = broadcast_batch(y, z)
        _, shift = self.direction(z, physics, y)
        return y + per_sample(severity, y) * shift.to(y.dtype)


def build(domain: str = "image", real_image: bool = True) -> Sphere:
    return Sphere(domain=domain, real_image=real_image)


__all__ = ["DOMAINS", "Sphere"]
