"""Photon noise in CT: counts N ~ Poisson(I0 exp(-p)) per detector bin, y' = -log(N / I0) (severity I0).

p is the clean sinogram (line integrals, real); I0 the incident photons per bin (the dose); I0 = inf
is the identity. The count is the Poisson inverse CDF at u = Phi(z) of the Gaussian latent, so it is
deterministic in z and monotone in each coordinate (splitting can move z; the map is piecewise
constant, so importance sampling at a design point cannot use its gradient). A count of 0 has no
logarithm: it is replaced by 0.5 photons (`ZERO_COUNT_FLOOR`), i.e. y' = log(2 I0) there.
Unmeasured bins (outside `measured_mask`) keep y.

Physical scale: our Radon line integrals are sums of image values times path lengths in pixels (about
28 through a 64 x 64 head phantom), which no photon beam survives. With `fov_cm` set (default 25 cm
across the image) an image value of 1 is taken to attenuate like `mu_cm` per cm (0.2 /cm: water at
~70 keV), so p = a y with a = mu_cm * fov_cm / n (0.078 at n = 64, longest rays ~2.2, as in body CT),
and the perturbed sinogram is y' = -log(N / I0) / a in the operator's units. `fov_cm = None` takes y as
physical line integrals already.

The quantile is computed in float64 with the regularised incomplete gamma functions
(P(N <= k) = Q(k + 1, lam)), on the side of the distribution where z lies, so tails far out
(z = +-8, u within 1e-15 of 0 or 1) stay exact; it equals scipy.stats.poisson.ppf(Phi(z), lam).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from survey.perturb.base import Family, Support, broadcast_batch, per_sample

ZERO_COUNT_FLOOR = 0.5


def poisson_quantile(z: torch.Tensor, lam: torch.Tensor, max_steps: int = 100_000) -> torch.Tensor:
    """The Poisson(lam) quantile at u = Phi(z): min{k : P(N <= k) >= u}, float64, shape of z * lam."""
    z, lam = torch.broadcast_tensors(z.to(torch.float64), torch.as_tensor(lam, dtype=torch.float64,
                                                                          device=z.device))
    upper = z > 0
    tail = 0.5 * torch.special.erfc(z.abs() / math.sqrt(2.0))  # Phi(-|z|)

    def reached(k: torch.Tensor) -> torch.Tensor:  # True iff P(N <= k) >= u
        a = (k + 1).clamp(min=1)
        lower = torch.special.gammaincc(a, lam) >= tail           # z <= 0: cdf(k) >= Phi(z)
        upper_ok = torch.special.gammainc(a, lam) <= tail         # z > 0: sf(k) <= Phi(-z)
        return torch.where(upper, upper_ok, lower) & (k >= 0)

    # Cornish-Fisher start, then unit steps (a few for lam >= 1).
    k = torch.floor(lam + lam.sqrt() * z + (z * z - 1) / 6).clamp(min=0)
    for _ in range(max_steps):
        at_k, below = reached(k), reached(k - 1)
        done = at_k & ~below
        if bool(done.all()):
            return k
        k = torch.where(~at_k, k + 1, torch.where(below, k - 1, k))
    raise RuntimeError("poisson_quantile did not converge")


@dataclass(kw_only=True)
class Poisson(Family):
    """Transmission CT photon noise at I0 incident photons per detector bin."""

    example_severity = 500.0  # a severity with a visible effect (survey.testing.check_family)

    name = "poisson"
    severity_name = "I0"
    severity_unit = "photons per bin"
    kinds = ("radon",)  # real line integrals; a k-space has no photon counts

    #: Linear attenuation (1/cm) of an image value of 1; the image spans `fov_cm` (None: y is physical).
    mu_cm: float = 0.2
    fov_cm: float | None = 25.0

    def __post_init__(self):
        if not (self.mu_cm > 0 and (self.fov_cm is None or self.fov_cm > 0)):
            raise ValueError(f"poisson: mu_cm and fov_cm must be > 0, got {self.mu_cm!r}, {self.fov_cm!r}")

    def attenuation(self, physics) -> float:
        """a: physical line integral per unit of the operator's line integral (1 when fov_cm is None)."""
        return 1.0 if self.fov_cm is None else self.mu_cm * self.fov_cm / physics.size
    identity_severity = math.inf
    differentiable = False

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics) -> torch.Tensor:
        """y: (B or 1, *sinogram_shape) real line integrals; z: (B, measured bins); severity I0 > 0."""
        if torch.is_complex(y):
            raise ValueError("the poisson family needs real line integrals (a CT sinogram)")
        y = broadcast_batch(y, z)
        support = Support.of(physics)
        dose = per_sample(severity, y).to(torch.float64)
        if bool((dose <= 0).any()):
            raise ValueError("I0 (photons per bin) must be > 0")
        flat_y = y.reshape(y.shape[0], -1)
        index = support.index.to(y.device)
        scale = self.attenuation(physics)
        p = flat_y[:, index].to(torch.float64) * scale
        dose = dose.expand(*y.shape).reshape(y.shape[0], -1)[:, index]
        finite = torch.isfinite(dose)
        lam = torch.where(finite, dose * torch.exp(-p), torch.ones_like(p))
        counts = poisson_quantile(z.reshape(z.shape[0], -1).to(y.device), lam)
        noisy = -torch.log(counts.clamp(min=ZERO_COUNT_FLOOR) / torch.where(finite, dose, torch.ones_like(dose)))
        values = torch.where(finite, (noisy / scale).to(y.dtype), flat_y[:, index])  # I0 = inf: y exactly
        out = flat_y.clone()
        out[:, index] = values
        return out.reshape(y.shape)


def build(**params) -> Poisson:
    return Poisson(**params)


__all__ = ["Poisson", "ZERO_COUNT_FLOOR", "poisson_quantile"]
