"""The perturbation-family contract and the measured-entry bookkeeping every family shares.

A family is a deterministic map apply(y, z, severity, physics) -> y' of a standard Gaussian latent
z: all randomness enters through z, so a rare-event estimator can move z (pCN, importance sampling)
and any draw replays from its z alone. Shapes: y (B, *measurement_shape) or (1, ...) broadcast to
the batch of z; z (B, *latent_shape(physics)); severity a float or a tensor of shape (B,) (or any
shape that broadcasts against y's leading axes, e.g. (B, coils) for a per-coil noise level).

The latent is flat, one real coordinate per real degree of freedom of the measured entries
(two per complex entry, real then imaginary interleaved), so nothing can land off the measured
entries and the latent dimension is the number of real measurements.

Physical families (motion, coil and field errors, detector faults) may need the object x, not only
y: they set `needs_image = True` and take it as the keyword `x` (B or 1, 1, n, n) in `apply`;
their latent has its own shape (`latent_shape`). Callers that do not know a family use
`family.perturb(y, z, severity, physics, x=x)`, which hands x on only to families that need it.
`kinds` names the operator kinds a family applies to (None: any); `severity_unit` the unit of its
severity ("px", "%", "cycles"; "" for a plain norm or sigma).
"""

from __future__ import annotations

import math
import weakref
from typing import ClassVar

import torch


def measured_mask(physics) -> torch.Tensor:
    """Bool (*measurement_shape) on CPU: True where y holds a real measurement.

    `physics.measured_mask()` when the operator has it, else the non-zeros of A A* 1 (above 1e-6 of
    the largest), the rule of `tasks.attack.measurement_support`.
    """
    if hasattr(physics, "measured_mask"):
        mask = physics.measured_mask()
        return mask.reshape(tuple(physics.measurement_shape)).cpu()
    shape = tuple(physics.measurement_shape)
    dtype = torch.complex128 if is_complex(physics) else torch.float64
    with torch.no_grad():
        probe = physics.A_adjoint(torch.ones((1, *shape), dtype=dtype))
        if torch.is_complex(probe) and not is_complex(physics):
            probe = probe.real
        reach = physics.A(probe).abs()
    return (reach > 1e-6 * reach.max()).reshape(shape).cpu()


def is_complex(physics) -> bool:
    """True when the operator's measurements are complex (Fourier)."""
    flag = getattr(physics, "complex_measurements", None)
    if flag is not None:
        return bool(flag)
    with torch.no_grad():
        return torch.is_complex(physics.A(torch.zeros((1, *physics.image_shape), dtype=torch.float64)))


class Support:
    """Flat indices of the measured entries of one operator (cached per operator object)."""

    _cache: ClassVar[weakref.WeakKeyDictionary] = weakref.WeakKeyDictionary()

    def __init__(self, physics):
        mask = measured_mask(physics)
        self.shape = tuple(mask.shape)
        self.index = mask.reshape(-1).nonzero().squeeze(1)
        self.mask = mask
        self.complex = is_complex(physics)

    @classmethod
    def of(cls, physics) -> "Support":
        try:
            return cls._cache[physics]
        except (KeyError, TypeError):
            support = cls(physics)
            try:
                cls._cache[physics] = support
            except TypeError:
                pass
            return support

    @property
    def count(self) -> int:
        """m: the number of measured entries (complex entries count once)."""
        return int(self.index.numel())

    @property
    def dim(self) -> int:
        """Real degrees of freedom of the measured entries: the latent dimension."""
        return self.count * (2 if self.complex else 1)

    def scatter(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Latent (B, dim) -> measurement-shaped (B, *shape) noise with E|e_i|^2 = 1 on measured entries.

        Complex entries get (z_re + i z_im) / sqrt(2); entries off the support are exactly zero.
        dtype and device follow `like`.
        """
        z = z.reshape(z.shape[0], -1)
        if z.shape[1] != self.dim:
            raise ValueError(f"latent has {z.shape[1]} coordinates, the operator has {self.dim} measured "
                             "real degrees of freedom")
        index = self.index.to(like.device)
        if self.complex:
            real = z.to(device=like.device, dtype=like.real.dtype).reshape(z.shape[0], -1, 2) / math.sqrt(2.0)
            values = torch.view_as_complex(real.contiguous())
            dtype = like.dtype if torch.is_complex(like) else values.dtype
        else:
            values = z.to(device=like.device, dtype=like.dtype)
            dtype = like.dtype
        flat = torch.zeros((z.shape[0], math.prod(self.shape)), dtype=dtype, device=like.device)
        flat[:, index] = values.to(dtype)
        return flat.reshape(z.shape[0], *self.shape)


def per_sample(value, y: torch.Tensor) -> torch.Tensor:
    """A float or a tensor of leading-axis shape (B,) / (B, C) / ... as a tensor broadcastable to y."""
    value = torch.as_tensor(value, dtype=y.real.dtype, device=y.device)
    if value.ndim > y.ndim:
        raise ValueError(f"severity of shape {tuple(value.shape)} does not fit measurements {tuple(y.shape)}")
    return value.reshape(*value.shape, *([1] * (y.ndim - value.ndim)))


def batch_severity(severity, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A float or a (B,) tensor as a (batch,) real tensor on like's device (float64 for the families' maths)."""
    value = torch.as_tensor(severity, dtype=torch.float64, device=like.device)
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] not in (1, batch)):
        raise ValueError(f"severity of shape {tuple(value.shape)} is not a number or one value per draw ({batch})")
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise ValueError("severity must be finite and >= 0")
    return value.reshape(-1).expand(batch).clone()


def broadcast_batch(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """y (B, ...) or (1, ...) expanded to z's batch."""
    if y.shape[0] == z.shape[0]:
        return y
    if y.shape[0] == 1:
        return y.expand(z.shape[0], *y.shape[1:])
    raise ValueError(f"y has batch {y.shape[0]}, z has batch {z.shape[0]} (use equal batches or y of batch 1)")


class Family:
    """A perturbation family: y' = apply(y, z, severity, physics), deterministic in (y, z, severity).

    Class facts: `name`; `severity_name` (the physical unit's name, "sigma", "I0", "radius");
    `identity_severity`, the severity at which apply is the identity (0, or inf for a photon dose);
    `differentiable`, whether y' is differentiable in z (importance sampling at the most probable
    failure point needs it; the Poisson family is piecewise constant in z).
    """

    name: ClassVar[str] = ""
    severity_name: ClassVar[str] = "severity"
    identity_severity: ClassVar[float] = 0.0
    differentiable: ClassVar[bool] = True
    #: True when `apply` needs the object: apply(y, z, severity, physics, x=x) with x (B or 1, 1, n, n).
    needs_image: ClassVar[bool] = False
    #: Operator kinds (physics.kind) the family applies to; None: any.
    kinds: ClassVar[tuple[str, ...] | None] = None
    #: Unit of the severity ("px", "%", "cycles", "degrees"); "" when it is a plain number.
    severity_unit: ClassVar[str] = ""
    #: A severity with a visible effect, for the property checks (survey.testing.check_family).
    example_severity: ClassVar[float | None] = None

    def latent_shape(self, physics) -> tuple[int, ...]:
        """Shape of one latent draw z (without the batch axis): (real measured degrees of freedom,)."""
        return (Support.of(physics).dim,)

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics) -> torch.Tensor:
        raise NotImplementedError

    def applies_to(self, physics) -> bool:
        """Whether the family is defined for this operator (its kind is in `kinds`, or `kinds` is None)."""
        return self.kinds is None or getattr(physics, "kind", "") in self.kinds

    def perturb(self, y: torch.Tensor, z: torch.Tensor, severity, physics, x: torch.Tensor | None = None
                ) -> torch.Tensor:
        """`apply`, with the object x handed on to families that need it (`needs_image`); others ignore x."""
        if self.needs_image:
            if x is None:
                raise ValueError(f"the {self.name!r} family needs the object x (apply(..., x=x))")
            return self.apply(y, z, severity, physics, x=x)
        return self.apply(y, z, severity, physics)

    def params(self) -> dict:
        return {}


__all__ = ["Family", "Support", "batch_severity", "broadcast_batch", "is_complex", "measured_mask", "per_sample"]
