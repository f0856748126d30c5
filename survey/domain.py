"""Where a perturbation lives: a `Domain` in place of `domain == "image"` branches.

Image domain: r is shaped like the image x (real), enters the data as y + A r, is measured against ||x||,
and a measurement-space gradient g comes back to it through Re A* g. Measurement domain: e is shaped
like y = A x (complex for Fourier), lives on the measured entries only (`physics.measured_mask()`), enters
as y + e, is measured against ||A x||, and takes g directly. Every search and every measurement of a
perturbation (attack, budget search, spectrum) asks its `Domain` these questions.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from survey.metrics import norms
from survey.numerics import measured_mask, real_like


class Domain:
    """A perturbation space; use the instances `IMAGE` and `MEASUREMENT` (or `domain(name)`)."""

    name: ClassVar[str]
    #: Image-domain gradient rules a search may use here ("fbp": Algorithm 2's B in place of A*).
    gradient_rules: ClassVar[tuple[str, ...]] = ("adjoint",)
    #: Whether a support mask on the image (the foreground) can confine the perturbation.
    takes_image_support: ClassVar[bool] = False

    def like(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The tensor a perturbation is shaped like: x (B, 1, n, n) or y (B, *measurement)."""
        raise NotImplementedError

    def scale(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B,) the norm relative sizes refer to: ||x|| or ||A x||."""
        return norms(self.like(x, y))

    def shift(self, physics, r: torch.Tensor) -> torch.Tensor:
        """What the perturbation adds to the measurements: A r or e itself."""
        raise NotImplementedError

    def support(self, physics, y: torch.Tensor) -> torch.Tensor | None:
        """0/1 mask the perturbation is confined to by the domain itself (None: anywhere)."""
        return None

    def pull_back(self, physics, grad_u: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A gradient with respect to the data u = y + shift(r) as a gradient with respect to r."""
        raise NotImplementedError

    def from_image(self, physics, v: torch.Tensor) -> torch.Tensor:
        """An image-space direction v as a perturbation of this domain: v, or A v."""
        raise NotImplementedError

    def as_image(self, physics, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The perturbation seen as an image (r, or Re H(e)): for visibility and support statistics."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Domain({self.name!r})"


class ImageDomain(Domain):
    name = "image"
    gradient_rules = ("adjoint", "fbp")
    takes_image_support = True

    def like(self, x, y):
        return x

    def shift(self, physics, r):
        return physics.A(r)

    def pull_back(self, physics, grad_u, like):
        return real_like(physics.A_adjoint(grad_u), like)

    def from_image(self, physics, v):
        return v

    def as_image(self, physics, r, x):
        return real_like(r, x)


class MeasurementDomain(Domain):
    name = "measurement"

    def like(self, x, y):
        return y

    def shift(self, physics, r):
        return r

    def support(self, physics, y):
        return measured_mask(physics, y)

    def pull_back(self, physics, grad_u, like):
        return grad_u

    def from_image(self, physics, v):
        return physics.A(v)

    def as_image(self, physics, r, x):
        return real_like(physics.H(r), x)


IMAGE = ImageDomain()
MEASUREMENT = MeasurementDomain()
#: name -> Domain, in the order study files list them.
DOMAINS: dict[str, Domain] = {IMAGE.name: IMAGE, MEASUREMENT.name: MEASUREMENT}


def domain(name: "str | Domain") -> Domain:
    """The Domain called `name` (a Domain passes through); ValueError naming the choices otherwise."""
    if isinstance(name, Domain):
        return name
    if name not in DOMAINS:
        raise ValueError(f"domain {name!r} is not one of {list(DOMAINS)}")
    return DOMAINS[name]


__all__ = ["DOMAINS", "Domain", "IMAGE", "ImageDomain", "MEASUREMENT", "MeasurementDomain", "domain"]
