"""The stable reference: wavelet-l1 + TV compressed sensing solved by FISTA, called like a network.

Problem (z a real image, (B, 1, n, n)):

    min_z  1/(2 s) ||A z - y||^2 + lam_w ||W_d z||_1 + lam_tv TV_eps(z),     s = ||A||_2^2

W_d are the detail coefficients of an orthogonal periodised wavelet transform (the coarse
approximation is not penalised) and TV_eps the smoothed isotropic TV (`survey.solvers.tv`).
Dividing the data term by s = physics.norm()^2 (cached per operator) makes lam_w and lam_tv
comparable across operators of different scale (unit-norm Fourier vs. Radon with ||A|| ~ 10^2):
it is the objective 1/2 ||A z - y||^2 + s lam_w ||W_d z||_1 + s lam_tv TV_eps(z).

Scheme: FISTA (Beck & Teboulle 2009) on the smooth part f = data + lam_tv TV_eps, whose gradient
Re A*(A z - y) / s + lam_tv D^T(D z / sqrt(|D z|^2 + eps^2)) is L-Lipschitz with
L = 1 + 8 lam_tv / eps; fixed step 1 / L. The non-smooth part lam_w ||W_d z||_1 has an exact
prox because W is orthogonal: W^T soft(W z, lam_w / L) on details (W as per-level matrix products up to
128 px a side, survey.solvers.wavelet_matrix: the same map, a fraction of the calls). This avoids a
nested prox of the sum and keeps every iteration a fixed, differentiable map, so `unrolled=True` gives a graph
that attacks can differentiate with respect to y. Warm start: Re H(y). Iterations are fixed (no
stopping rule), so a batch gives exactly the per-image results.

Sampling sweeps hold the weights fixed instead (`weights_fixed_at(training operator)`): s is then the
training operator's ||A||^2 for every level, so more views mean more data against the same
regularisation. Scaled by each level's own norm, a Radon sweep (||A||^2 grows with the view count)
would raise the regularisation with the data and the reference would stagnate (measured: 36.0 dB at
50 views and 36.1 dB at 180 on brain test slices).

Defaults per operator are the operator's own `reference_defaults` (survey.physics), chosen by
`survey.solvers.tuning.tune` on brain validation slices; the grids and the full results are in that
module's docstring.
"""

from __future__ import annotations

import copy
import weakref
from contextlib import nullcontext

import torch
from torch import nn

from survey.physics.base import LinearPhysics
from survey.solvers import tv
from survey.solvers.wavelet_matrix import MatrixWavelet
from survey.solvers.wavelets import Wavelet2D

_PARAM_NAMES = ("lam_w", "lam_tv", "iterations", "wavelet", "levels", "eps")


def soft_threshold(c: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """Prox of threshold * |.|_1 (elementwise; real input)."""
    return torch.sign(c) * torch.relu(c.abs() - threshold)


class CSReconstructor(nn.Module):
    """`solver(y, physics) -> (B, 1, n, n)` real image, like a reconstruction network.

    lam_w, lam_tv: weights relative to ||A||^2 (see module docstring); eps: TV smoothing in image
    units; iterations: fixed FISTA iteration count. unrolled=False runs under `torch.no_grad`;
    unrolled=True keeps the autograd graph through every iteration (differentiable in y).
    operator_norm: ||A||_2 if known; otherwise `physics.norm()` is computed once per operator.
    weight_norm: the ||A||_2 the weights are relative to (default: the operator's own, s above).
    """

    def __init__(self, *, lam_w: float, lam_tv: float, iterations: int = 200, wavelet: str = "db2",
                 levels: int = 3, eps: float = 3e-3, unrolled: bool = False,
                 operator_norm: float | None = None, weight_norm: float | None = None):
        super().__init__()
        for name, value in (("lam_w", lam_w), ("lam_tv", lam_tv)):
            if not value >= 0:
                raise ValueError(f"CSReconstructor: {name} must be >= 0, got {value!r}")
        if not eps > 0:
            raise ValueError(f"CSReconstructor: eps must be > 0, got {eps!r}")
        if int(iterations) != iterations or iterations < 0:
            raise ValueError(f"CSReconstructor: iterations must be a non-negative integer, got {iterations!r}")
        for name, value in (("operator_norm", operator_norm), ("weight_norm", weight_norm)):
            if value is not None and not value > 0:
                raise ValueError(f"CSReconstructor: {name} must be > 0, got {value!r}")
        self.lam_w, self.lam_tv, self.eps = float(lam_w), float(lam_tv), float(eps)
        self.iterations = int(iterations)
        self.unrolled = bool(unrolled)
        self.operator_norm = operator_norm
        self.weight_norm = None if weight_norm is None else float(weight_norm)
        self.wavelet = Wavelet2D(wavelet, levels)
        self._norms: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict:
        # The per-operator norm cache holds weak references, which cannot be pickled (Ray, deepcopy).
        state = dict(self.__dict__)
        state["_norms"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._norms = weakref.WeakKeyDictionary()

    @property
    def params(self) -> dict:
        """The hyper-parameters as a plain dict (for rows and reports)."""
        return dict(lam_w=self.lam_w, lam_tv=self.lam_tv, iterations=self.iterations,
                    wavelet=self.wavelet.wavelet, levels=self.wavelet.levels, eps=self.eps)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items()) + f", unrolled={self.unrolled}"

    def norm_squared(self, physics: LinearPhysics) -> float:
        """s = ||A||_2^2, from `operator_norm` or `physics.norm()` cached per operator object."""
        if self.operator_norm is not None:
            return self.operator_norm ** 2
        if physics not in self._norms:
            self._norms[physics] = float(physics.norm()) ** 2
        return self._norms[physics]

    def weight_scale(self, physics: LinearPhysics) -> float:
        """The s dividing the data term: weight_norm^2 when fixed, else the operator's own ||A||^2."""
        return self.weight_norm ** 2 if self.weight_norm is not None else self.norm_squared(physics)

    def weights_fixed_at(self, physics: LinearPhysics) -> "CSReconstructor":
        """A copy whose weights stay relative to `physics` (e.g. the training operator) on every operator."""
        twin = copy.copy(self)
        twin._norms = weakref.WeakKeyDictionary()
        twin.weight_norm = float(self.norm_squared(physics)) ** 0.5
        return twin

    def lipschitz(self, physics: LinearPhysics) -> float:
        """Lipschitz constant of the smooth part's gradient: ||A||^2 / s from the data term (1 unless the
        weights are fixed at another operator) plus the smoothed TV's share."""
        data = self.norm_squared(physics) / self.weight_scale(physics)
        return data + tv.GRADIENT_NORM_SQUARED * self.lam_tv / self.eps

    def forward(self, y: torch.Tensor, physics: LinearPhysics) -> torch.Tensor:
        with nullcontext() if self.unrolled else torch.no_grad():
            return self._fista(y, physics)

    def _fista(self, y: torch.Tensor, physics: LinearPhysics) -> torch.Tensor:
        s = self.weight_scale(physics)
        step = 1.0 / self.lipschitz(physics)
        z = physics.H(y)
        z = z.real if torch.is_complex(z) else z
        if z.ndim != 4 or z.shape[1] != 1:
            raise ValueError(f"CSReconstructor: physics.H(y) must be (B, 1, n, n), got {tuple(z.shape)}")
        threshold = step * self.lam_w * self.wavelet.detail_mask(z.shape[-2:], z.device, z.dtype)
        wavelet = MatrixWavelet(self.wavelet, z.shape[-2:], z.dtype, z.device)   # same map, fewer calls
        previous, momentum_point, t = z, z, 1.0
        for _ in range(self.iterations):
            residual = physics.A_adjoint(physics.A(momentum_point) - y)
            residual = residual.real if torch.is_complex(residual) else residual
            grad = residual / s
            if self.lam_tv > 0:
                grad = grad + self.lam_tv * tv.smoothed_tv_grad(momentum_point, self.eps)
            z = wavelet.inverse(soft_threshold(wavelet(momentum_point - step * grad), threshold))
            t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
            momentum_point = z + ((t - 1.0) / t_next) * (z - previous)
            previous, t = z, t_next
        return z

    def objective(self, z: torch.Tensor, y: torch.Tensor, physics: LinearPhysics) -> torch.Tensor:
        """The minimised objective per image (B,), for diagnostics and tests."""
        s = self.weight_scale(physics)
        data = (physics.A(z) - y).abs().square().flatten(1).sum(1) / (2 * s)
        c = self.wavelet(z) * self.wavelet.detail_mask(z.shape[-2:], z.device, z.dtype)
        return data + self.lam_w * c.abs().flatten(1).sum(1) + self.lam_tv * tv.smoothed_tv(z, self.eps)


def default_params(physics: LinearPhysics) -> dict:
    """The reference's defaults for `physics` (its `reference_defaults`), a fresh dict."""
    defaults = getattr(physics, "reference_defaults", None)
    if defaults is None:
        raise ValueError(f"make_reference: no default CS parameters for {type(physics).__name__} "
                         "(give the operator class a `reference_defaults`)")
    return dict(defaults)


def make_reference(physics: LinearPhysics, **overrides) -> CSReconstructor:
    """The reference solver with the operator's `reference_defaults`, any field overridden."""
    defaults = default_params(physics)
    allowed = set(_PARAM_NAMES) | {"unrolled", "operator_norm", "weight_norm"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"make_reference: unknown parameter(s) {sorted(unknown)}; allowed {sorted(allowed)}")
    return CSReconstructor(**{**defaults, **overrides})
