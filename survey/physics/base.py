"""The linear forward-operator interface every modality implements (deepinv's `LinearPhysics`).

Besides A, A* and H an operator owns the facts the tests need about it, so no task or solver asks
for its kind: which measurement entries are real measurements (`measured_mask`), the sampling axes
a sweep can move it along (`sweep_axes`, `level`, `at_level`), which gradient rule the paper's
attack uses on it (`attack_gradient`) and the reference solver's defaults (`reference_defaults`).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import nn


class Axis(NamedTuple):
    """A sampling axis an operator can be moved along (sampling sweeps).

    name: the axis ("ratio", "views", "sigma"), also the row column holding the level's value;
    increasing: True when a larger value carries more information (False for a noise level);
    integer: values are counts (rows hold ints); snaps: the operator may achieve a value other than
    the requested one (a nested mask keeps whole lines), so rows also hold `requested_<name>`;
    noise: the value is the standard deviation of additive measurement noise y = A x + value * e.
    """

    name: str
    increasing: bool = True
    integer: bool = False
    snaps: bool = False
    noise: bool = False


class LinearPhysics(nn.Module):
    """A linear measurement operator y = A x with its adjoint and an easy linear reconstruction.

    Images are batches shaped (B, 1, n, n), real or complex, float32/float64 or complex64/complex128,
    on any device; measurements have an operator-specific shape (`measurement_shape`).
    Subclasses implement `A`, `A_adjoint` and `H`; `H` is the cheap linear reconstruction
    (A* for Fourier, filtered back-projection for Radon) networks are trained on.
    """

    kind: str = "linear"
    #: True when A maps real images to complex measurements (Fourier); False for Radon, identity.
    complex_measurements: bool = False
    #: The attack's gradient rule in the image domain (tasks.attack): "adjoint" (Algorithm 1, A*) or
    #: "fbp" (Algorithm 2, the easy reconstruction H in place of A*, as the paper does for Radon).
    attack_gradient: ClassVar[str] = "adjoint"
    #: Defaults of the reference solver (survey.solvers.cs.CSReconstructor keywords) for this operator,
    #: or None when none were tuned.
    reference_defaults: ClassVar[dict | None] = None
    #: Axes a sampling sweep can move this operator along; the first is the sweep's.
    sweep_axes: ClassVar[tuple[Axis, ...]] = ()

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def H(self, y: torch.Tensor) -> torch.Tensor:
        """Easy linear reconstruction; defaults to the adjoint."""
        return self.A_adjoint(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def describe(self) -> dict:
        """Low-cardinality facts for rows, cards and reports (kind, size, sampling...)."""
        return {"kind": self.kind, "size": self.size}

    def measured_mask(self) -> torch.Tensor:
        """Bool (1, *measurement_shape) on the operator's device: True where y holds a real measurement.

        The one definition: the entries A can reach, the non-zeros of A A* 1 (above 1e-6 of its
        largest entry, computed in float64). For Fourier operators that store k-space on a full
        zero-filled grid these are exactly the sampled entries; for Radon, every detector bin that
        sees a pixel; for the identity, everything. Perturbations and noise in measurement space are
        confined to it. Cached per device (operators are not changed in place).
        """
        device = self._device()
        cache = self.__dict__.setdefault("_measured_cache", {})
        if device not in cache:
            cache[device] = self._range_support(device)
        return cache[device]

    def _range_support(self, device: torch.device) -> torch.Tensor:
        dtype = torch.complex128 if self.complex_measurements else torch.float64
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor even when first asked in inference
            probe = self.A_adjoint(torch.ones((1, *self.measurement_shape), dtype=dtype, device=device))
            if torch.is_complex(probe) and not self.complex_measurements:
                probe = probe.real
            reach = self.A(probe).abs()
        return reach > 1e-6 * reach.max()

    # -- sampling sweeps ---------------------------------------------------------------------------

    def sweep_axis(self, name: str | None = None) -> Axis:
        """The axis `name` (default: the first of `sweep_axes`); ValueError when there is none."""
        if not self.sweep_axes:
            raise ValueError(f"{type(self).__name__} has no sampling axis to sweep")
        if name is None:
            return self.sweep_axes[0]
        for axis in self.sweep_axes:
            if axis.name == name:
                return axis
        raise ValueError(f"{type(self).__name__} has no sweep axis {name!r}; its axes are "
                         f"{[a.name for a in self.sweep_axes]}")

    def level(self, axis: str) -> float:
        """This operator's (achieved) value on `axis`."""
        self.sweep_axis(axis)
        return getattr(self, axis)

    def at_level(self, axis: str, value: float) -> "LinearPhysics":
        """An operator like this one at `value` on `axis` (nested sampling where the axis allows),
        on this operator's device."""
        raise ValueError(f"{type(self).__name__} cannot move along {axis!r}")

    def same_level(self, axis: str, other: "LinearPhysics") -> bool:
        """True when `other` sits at this operator's value on `axis`."""
        return math.isclose(float(self.level(axis)), float(other.level(axis)), rel_tol=0.0, abs_tol=1e-12)

    def _device(self) -> torch.device:
        return next((b.device for b in self.buffers()), torch.device("cpu"))

    @torch.no_grad()
    def norm(self, n_iter: int = 100, tol: float = 1e-6, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float64) -> float:
        """Operator norm ||A||_2 (largest singular value) by power iteration on A*A.

        Deterministic: the start vector comes from `generator`, seeded with 0 when none is given; that
        default result is cached on the operator (operators are not changed in place).
        """
        key = (n_iter, tol, dtype)
        cache = self.__dict__.setdefault("_norm_cache", {})
        if generator is None and key in cache:
            return cache[key]
        value = self._power_iteration(n_iter, tol, generator or torch.Generator().manual_seed(0), dtype)
        if generator is None:
            cache[key] = value
        return value

    def _power_iteration(self, n_iter: int, tol: float, generator: torch.Generator, dtype: torch.dtype) -> float:
        device = self._device()
        x = torch.randn((1, *self.image_shape), generator=generator, dtype=dtype).to(device)
        x = x / x.norm()
        sigma2 = 0.0
        for _ in range(n_iter):
            z = self.A_adjoint(self.A(x))
            z = z.real if not torch.is_complex(x) and torch.is_complex(z) else z
            new = float(z.norm())
            x = z / max(new, 1e-30)
            if abs(new - sigma2) <= tol * max(new, 1e-30):
                sigma2 = new
                break
            sigma2 = new
        return sigma2 ** 0.5
