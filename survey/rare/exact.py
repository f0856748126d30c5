"""Exact exceedance probabilities of planted maps: the truths every rare-event estimator is checked against.

Linear map: the network changes its output by G e for a measurement perturbation e = sigma z,
G = I + (K - 1) s s^T (s a unit vector, K the gain along s), and S(z) = ||G sigma z|| / ||x0||.
With t = s.z ~ N(0, 1) and Q = ||z||^2 - t^2 ~ chi2(d - 1) independent,

    P(S >= delta) = P(K^2 t^2 + Q >= R^2),  R = delta ||x0|| / sigma,

one-dimensional: 2 Phi(-R / K) + 2 int_0^{R/K} phi(t) chi2sf(R^2 - K^2 t^2; d - 1) dt (`quadratic_exceedance`).

Gated map (a planted nonlinear network): the gain along s1 is switched on by a sigmoid gate along a
second, orthogonal direction s2, ||f(y + e) - f(y)||^2 = sigma^2 (||z||^2 + (K^2 - 1) t1^2 g(t2)),
g(t) = 1 / (1 + exp(-kappa (t - c))); with Q ~ chi2(d - 2),

    P = 2 Phi(-R) + int_{-R}^{R} phi(t2) P(a(t2) t1^2 + Q >= R^2 - t2^2) dt2,  a = 1 + (K^2 - 1) g,

two-dimensional (the inner integral is the linear case). Both are computed with adaptive quadrature to
a relative accuracy near 1e-12 for any d (64 * 64 included) and p down to about 1e-300.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import integrate, optimize, special

EPSREL = 1e-12


def _chi2_sf(x: float, dof: int) -> float:
    if dof == 0:
        return 1.0 if x <= 0 else 0.0
    return 1.0 if x <= 0 else float(special.chdtrc(dof, x))


def _quad(f, a: float, b: float, epsrel: float, points=None) -> float:
    """Adaptive Gauss-Kronrod on [a, b] to a relative tolerance (quad's round-off warnings at the
    limit of double precision are expected and silenced; the tests cross-check two quadratures)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        value, _ = integrate.quad(f, a, b, epsabs=0.0, epsrel=epsrel, limit=500, points=points)
    return value


def quadratic_exceedance(r2: float, k: float, dof: int, epsrel: float = EPSREL) -> float:
    """P(k^2 t^2 + Q >= r2) for t ~ N(0, 1) and Q ~ chi2(dof) independent (k > 0, dof >= 0)."""
    if r2 <= 0:
        return 1.0
    if k <= 0:
        return _chi2_sf(r2, dof)
    b = math.sqrt(r2) / k
    tail = 2.0 * special.ndtr(-b)  # |t| >= b: certain
    if dof == 0:
        return float(tail)

    def integrand(t: float) -> float:
        return math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi) * special.chdtrc(dof, max(r2 - k * k * t * t, 0.0))

    # Scale the integrand so quad's tolerances are relative to the answer's size, not to 1.
    scale = max(integrand(b), integrand(0.0), 1e-300)
    inner = _quad(lambda t: integrand(t) / scale, 0.0, b, epsrel)
    return float(tail + 2.0 * scale * inner)


def quadratic_exceedance_by_q(r2: float, k: float, dof: int, epsrel: float = 1e-10) -> float:
    """The same probability integrated over Q instead of t (an independent check of the quadrature)."""
    if r2 <= 0:
        return 1.0

    def integrand(q: float) -> float:
        return math.exp(special.xlogy(dof / 2 - 1, q) - q / 2 - special.gammaln(dof / 2) - dof / 2 * math.log(2)) \
            * 2.0 * special.ndtr(-math.sqrt(max(r2 - q, 0.0)) / k)

    scale = max(integrand(r2), integrand(max(dof - 2, 1e-9)), 1e-300)
    inner = _quad(lambda q: integrand(q) / scale, 0.0, r2, epsrel, points=[min(max(dof - 2, 0), r2)])
    return float(scale * inner + special.chdtrc(dof, r2))


@dataclass
class LinearMap:
    """S(z) = sigma ||G z|| / x0_norm with G = I + (K - 1) s s^T; `direction` s (a unit vector, seeded)."""

    dim: int
    gain: float = 4.0
    sigma: float = 1.0
    x0_norm: float = 1.0
    seed: int = 0
    direction: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        if self.dim < 2 or self.gain <= 0:
            raise ValueError("need dim >= 2 and gain > 0")
        gen = torch.Generator().manual_seed(self.seed)
        s = torch.randn(self.dim, generator=gen, dtype=torch.float64)
        self.direction = s / s.norm()

    def output_change(self, z: torch.Tensor) -> torch.Tensor:
        """G sigma z: (N, d) -> (N, d)."""
        s = self.direction.to(z)
        return self.sigma * (z + (self.gain - 1) * (z @ s)[:, None] * s)

    def score(self, z: torch.Tensor) -> torch.Tensor:
        return self.output_change(z).norm(dim=1) / self.x0_norm

    def r2(self, delta: float) -> float:
        return (delta * self.x0_norm / self.sigma) ** 2

    def probability(self, delta: float, epsrel: float = EPSREL) -> float:
        return quadratic_exceedance(self.r2(delta), self.gain, self.dim - 1, epsrel)

    def design_radius(self, delta: float) -> float:
        """||z*||, the distance from 0 to the failure set (K > 1: R / K along +-s)."""
        return math.sqrt(self.r2(delta)) / max(self.gain, 1.0)

    def delta_for(self, p: float) -> float:
        """The threshold with P(S >= delta) = p (to about 1e-6 relative; then use `probability`)."""
        return _solve(lambda d: self.probability(d, 1e-8), p, self.sigma * math.sqrt(self.dim) / self.x0_norm)


@dataclass
class GatedMap:
    """The planted nonlinear network: gain sqrt(1 + (K^2 - 1) g(s2.z)) along s1, g a sigmoid gate.

    S(z) = sigma sqrt(||z||^2 + (K^2 - 1) (s1.z)^2 g(s2.z)) / x0_norm, g(t) = sigmoid(kappa (t - c)).
    """

    dim: int
    gain: float = 4.0
    kappa: float = 2.0
    center: float = 1.0
    sigma: float = 1.0
    x0_norm: float = 1.0
    seed: int = 0
    directions: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        if self.dim < 3 or self.gain <= 0:
            raise ValueError("need dim >= 3 and gain > 0")
        gen = torch.Generator().manual_seed(self.seed)
        q, _ = torch.linalg.qr(torch.randn(self.dim, 2, generator=gen, dtype=torch.float64))
        self.directions = q.T.contiguous()  # (2, d) orthonormal rows s1, s2

    def gate(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.kappa * (t - self.center))

    def score(self, z: torch.Tensor) -> torch.Tensor:
        t = z @ self.directions.to(z).T
        sq = (z * z).sum(dim=1) + (self.gain**2 - 1) * t[:, 0] ** 2 * self.gate(t[:, 1])
        return self.sigma * sq.clamp(min=0).sqrt() / self.x0_norm

    def r2(self, delta: float) -> float:
        return (delta * self.x0_norm / self.sigma) ** 2

    def probability(self, delta: float, epsrel: float = 1e-11) -> float:
        r2 = self.r2(delta)
        r = math.sqrt(r2)
        k2 = self.gain**2 - 1

        def inner(t2: float) -> float:
            a = 1.0 + k2 * float(special.expit(self.kappa * (t2 - self.center)))
            return math.exp(-0.5 * t2 * t2) / math.sqrt(2 * math.pi) * quadratic_exceedance(
                r2 - t2 * t2, math.sqrt(a), self.dim - 2, epsrel)

        points = sorted({min(max(v, -r), r) for v in (self.center, 0.0, self.center + 3 / self.kappa)})
        grid = np.linspace(-r, r, 201)
        scale = max(max(inner(float(t)) for t in grid), 1e-300)
        total = _quad(lambda t: inner(t) / scale, -r, r, epsrel, points=points)
        return float(2.0 * special.ndtr(-r) + scale * total)

    def delta_for(self, p: float) -> float:
        return _solve(lambda d: self.probability(d, 1e-7), p, self.sigma * math.sqrt(self.dim) / self.x0_norm)


@dataclass(frozen=True)
class Mode:
    """One failure mode of a `ModeMap`: the score a * sign * (u_axis . z) + offset along axis `axis`."""

    axis: int
    sign: int
    slope: float
    offset: float


@dataclass
class ModeMap:
    """A planted failure set made of several half-spaces: S(z) = max_k (a_k sign_k (u_{axis_k} . z) + b_k).

    The axes u_j are orthonormal (seeded); two modes on one axis with opposite signs are the two ends of it
    (S = max(z1, -3 z1 - 6.16): the bulk on one side at low levels, the tail on the other). With t_j = u_j . z
    independent N(0, 1), P(S < L) is a product over axes of P(t_j in an interval), so

        p(L) = 1 - prod_j (1 - tail_j(L)),  tail_j = P(t_j outside [lo_j, hi_j]) = Phi(lo_j) + Phi(-hi_j),

    exact in closed form to double precision (`probability`; `probability_by_quadrature` integrates the same
    set numerically, the test's independent check). `shares(L)` gives each mode's part of p (disjoint sets).
    A few vector operations per call: coverage over hundreds of repeats runs in seconds.
    """

    dim: int
    modes: tuple[Mode, ...]
    seed: int = 0
    axes: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        count = 1 + max(m.axis for m in self.modes)
        if self.dim < count or any(m.slope <= 0 or m.sign not in (-1, 1) for m in self.modes):
            raise ValueError("need dim >= number of axes, slopes > 0 and signs +-1")
        gen = torch.Generator().manual_seed(self.seed)
        q, _ = torch.linalg.qr(torch.randn(self.dim, count, generator=gen, dtype=torch.float64))
        self.axes = q.T.contiguous()  # (axes, d) orthonormal rows

    def score(self, z: torch.Tensor) -> torch.Tensor:
        t = z @ self.axes.to(z).T  # (N, axes)
        parts = [m.slope * m.sign * t[:, m.axis] + m.offset for m in self.modes]
        return torch.stack(parts, dim=1).amax(dim=1)

    def _bounds(self, level: float, axis: int) -> tuple[float, float]:
        """S < level on this axis iff lo < t < hi."""
        lo, hi = -math.inf, math.inf
        for m in self.modes:
            if m.axis == axis:
                edge = (level - m.offset) / m.slope
                if m.sign > 0:
                    hi = min(hi, edge)
                else:
                    lo = max(lo, -edge)
        return lo, hi

    def _tails(self, level: float) -> list[float]:
        tails = []
        for axis in sorted({m.axis for m in self.modes}):
            lo, hi = self._bounds(level, axis)
            tails.append(1.0 if lo >= hi else float(special.ndtr(lo) + special.ndtr(-hi)))
        return tails

    def probability(self, delta: float) -> float:
        """P(S(z) >= delta), exact."""
        tails = self._tails(delta)
        if any(t >= 1.0 for t in tails):
            return 1.0
        return float(-math.expm1(sum(math.log1p(-t) for t in tails)))

    def probability_by_quadrature(self, delta: float) -> float:
        """The same by adaptive quadrature of the Gaussian density over each axis's failure half-lines."""
        keep = 0.0
        for axis in sorted({m.axis for m in self.modes}):
            lo, hi = self._bounds(delta, axis)
            if lo >= hi:
                return 1.0
            phi = lambda t: math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731
            tail = sum(_quad(phi, edge, edge + 40.0, 1e-12) for edge in (hi, -lo) if math.isfinite(edge))
            keep += math.log1p(-tail)
        return float(-math.expm1(keep))

    def shares(self, delta: float) -> list[float]:
        """Each mode's share of p at delta (the modes' sets are disjoint for delta above every crossing)."""
        parts = []
        for m in self.modes:
            edge = (delta - m.offset) / m.slope
            parts.append(float(special.ndtr(-edge)))
        total = sum(parts)
        return [v / total for v in parts]

    def design_points(self, delta: float) -> torch.Tensor:
        """(K, d): the point of each mode's half-space nearest the origin."""
        rows = [m.sign * (delta - m.offset) / m.slope * self.axes[m.axis] for m in self.modes]
        return torch.stack(rows)

    def delta_for(self, p: float) -> float:
        """The threshold with P(S >= delta) = p (Brent on log p)."""
        return _solve(self.probability, p, 1.0 + max(abs(m.offset) for m in self.modes))


def two_mode_map(dim: int, seed: int = 0) -> ModeMap:
    """S = max(t, -3 t - 6.16), t = u . z: at low levels the +t side holds the bulk, at delta = 5 (p = 9.99e-5)
    the far -t side holds 99.7% of p; particles that follow the bulk lose the tail."""
    return ModeMap(dim, (Mode(0, 1, 1.0, 0.0), Mode(0, -1, 3.0, -6.16)), seed=seed)


def three_mode_map(dim: int, seed: int = 0) -> ModeMap:
    """S = max(t1, 2 t2 - 2.5, 3 t3 - 8) on orthonormal axes: three modes whose shares of p change with the level
    (about 0.10 / 0.85 / 0.05 at p = 1e-3, 0 / 0.61 / 0.39 at p = 1e-7, 0 / 0.17 / 0.83 at p = 1e-9)."""
    return ModeMap(dim, (Mode(0, 1, 1.0, 0.0), Mode(1, 1, 2.0, -2.5), Mode(2, 1, 3.0, -8.0)), seed=seed)


@dataclass
class SphereMap:
    """The isotropic set: S(z) = ||z|| (the identity under white noise), p = chi2sf(delta^2; d)."""

    dim: int

    def score(self, z: torch.Tensor) -> torch.Tensor:
        return z.norm(dim=1)

    def probability(self, delta: float) -> float:
        return _chi2_sf(delta * delta, self.dim)

    def delta_for(self, p: float) -> float:
        return math.sqrt(float(special.chdtri(self.dim, p)))


def _solve(prob, p: float, start: float) -> float:
    """delta with prob(delta) = p (prob decreasing), by bracketing then Brent on log p."""
    low, high = start * 0.5, start
    while prob(high) > p:
        low, high = high, high * 1.5
    while prob(low) < p:
        low *= 0.5
    return optimize.brentq(lambda d: math.log(prob(d)) - math.log(p), low, high, rtol=1e-8)


__all__ = ["GatedMap", "LinearMap", "Mode", "ModeMap", "SphereMap", "quadratic_exceedance", "quadratic_exceedance_by_q",
           "three_mode_map", "two_mode_map"]
