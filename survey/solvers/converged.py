"""The compressed-sensing reference solved to a tolerance, with gradients from its fixed point.

`ConvergedCS(reference, tolerance=...)` is called like a network, `solver(y, physics) -> (B, 1, n, n)`,
and solves the reference's problem (survey.solvers.cs: wavelet l1 + smoothed TV, the same weights and
step) by FISTA with adaptive restart until the relative change and the fixed-point residual are both
below `tolerance` (survey.solvers.fixed_point), instead of stopping after a fixed iteration count.
Its worst case is then a property of the solution map y -> z*(y), not of a truncated iteration.

Gradients (`gradient`):
- "implicit": at the fixed point, the vector-Jacobian product is one conjugate-gradient solve with
  P (Re A*A / s + lam_tv Hess TV_eps) P, P the projection onto the wavelet coefficients the soft
  threshold keeps (the coarse block and the active details), followed by A u / s; no graph is kept.
- "unroll": autograd through every FISTA iteration of the same tolerance-stopped solve (the
  cross-check; memory grows with the iterations).

The wavelet transforms run as per-level matrix products (survey.solvers.wavelet_matrix: the same map as
the reference's `Wavelet2D`, fewer calls); CG products apply the projection once (their iterates stay in
range(P)).

Warm starts: with `warm_start`, a solve starts from the previous call's solution for every image
whose measurements are within `warm_radius` (relative) of that call's, which is what consecutive
steps of a search do; the backward CG starts from the best multiple of the previous adjoint solution. The solution is
the same to the tolerance whatever the start. `last_report` holds the latest forward solve's
per-image report (survey.solvers.fixed_point.SolveReport); `stats` counts every solve since
`reset_stats()`: solves, images, iterations, images not converged, CG iterations and CG solves that
missed their tolerance, and per call the mean iterations per image (`forward_history`, `adjoint_history`).
"""

from __future__ import annotations

import torch
from torch import nn

from survey.physics.base import LinearPhysics
from survey.solvers import tv
from survey.solvers.cs import CSReconstructor, make_reference
from survey.solvers.wavelet_matrix import MatrixWavelet
from survey.solvers.fixed_point import (FixedPoint, ProxGradientProblem, SolveReport, check_tolerance,
                                        fixed_point, implicit_jvp, implicit_vjp, solve)

GRADIENTS = ("implicit", "unroll")


def _real(t: torch.Tensor) -> torch.Tensor:
    return t.real if torch.is_complex(t) else t


class CSProblem(ProxGradientProblem):
    """The reference's problem on `physics`: f = ||A z - y||^2 / (2 s) + lam_tv TV_eps(z), g = lam_w ||W_d z||_1."""

    def __init__(self, reference: CSReconstructor, physics: LinearPhysics, shape: tuple[int, int],
                 device: torch.device, dtype: torch.dtype):
        self.reference, self.physics = reference, physics
        self.s = reference.weight_scale(physics)
        self.step = 1.0 / reference.lipschitz(physics)
        self.wavelet = MatrixWavelet(reference.wavelet, shape, dtype, device)
        self.threshold = self.step * reference.lam_w * reference.wavelet.detail_mask(shape, device, dtype)
        self._below = -self.threshold
        self._tv_at = None

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        z = _real(self.physics.H(y))
        if z.ndim != 4 or z.shape[1] != 1:
            raise ValueError(f"ConvergedCS: physics.H(y) must be (B, 1, n, n), got {tuple(z.shape)}")
        return z

    def gradient(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        grad = _real(self.physics.A_adjoint(self.physics.A(z) - y)) / self.s
        if self.reference.lam_tv > 0:
            grad = grad + self.reference.lam_tv * tv.smoothed_tv_grad(z, self.reference.eps)
        return grad

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        c = self.wavelet(v)
        # c - clamp(c, -t, t) is the soft threshold sign(c) max(|c| - t, 0), to the last bit, in two calls.
        return self.wavelet.inverse(c - torch.clamp(c, self._below, self.threshold))

    def support(self, v: torch.Tensor) -> torch.Tensor:
        kept = (self.wavelet(v).abs() > self.threshold) | (self.threshold == 0)
        return kept.to(v.dtype)

    def project(self, support: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.wavelet.inverse(support * self.wavelet(w))

    def hessian(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = _real(self.physics.A_adjoint(self.physics.A(w))) / self.s
        if self.reference.lam_tv > 0:
            if self._tv_at is None or self._tv_at[0] is not z:  # CG applies it many times at one z
                self._tv_at = (z, tv.smoothed_tv_hessian_at(z, self.reference.eps))
            out = out + self.reference.lam_tv * self._tv_at[1](w)
        return out

    def data_jvp(self, dy: torch.Tensor) -> torch.Tensor:
        return _real(self.physics.A_adjoint(dy)) / self.s

    def data_vjp(self, u: torch.Tensor) -> torch.Tensor:
        return self.physics.A(u) / self.s


class _ImplicitSolve(torch.autograd.Function):
    """z*(y) solved to tolerance; backward by the implicit CG solve at the fixed point."""

    @staticmethod
    def forward(ctx, y, module, problem, z0):
        point = fixed_point(problem, y, z0, module.tolerance, module.max_iterations)
        ctx.module, ctx.problem, ctx.point = module, problem, point
        module._after_solve(y, point.z, point.report)
        return point.z

    @staticmethod
    def backward(ctx, v):
        module = ctx.module
        grad, u, report = implicit_vjp(ctx.problem, ctx.point, v, module.adjoint_tolerance,
                                       module.adjoint_iterations, u0=module._adjoint_start(v))
        module._after_adjoint(u, report)
        return grad, None, None, None


class ConvergedSolver(nn.Module):
    """`solver(y, physics) -> (B, 1, n, n)`: a prox-gradient problem (`problem(y, physics)`, implemented
    by subclasses) solved to `tolerance` and differentiated at its fixed point (see the module docstring).
    max_iterations: the cap per solve; gradient: "implicit" or "unroll"; adjoint_tolerance /
    adjoint_iterations: the backward CG's relative residual (default: tolerance) and cap."""

    def __init__(self, *, tolerance: float = 1e-5, max_iterations: int = 5000, gradient: str = "implicit",
                 adjoint_tolerance: float | None = None, adjoint_iterations: int = 2000, warm_start: bool = True,
                 warm_radius: float = 0.5):
        super().__init__()
        name = type(self).__name__
        check_tolerance(tolerance, max_iterations, name)
        adjoint_tolerance = tolerance if adjoint_tolerance is None else adjoint_tolerance
        check_tolerance(adjoint_tolerance, adjoint_iterations, f"{name} adjoint")
        if gradient not in GRADIENTS:
            raise ValueError(f"{name}: gradient must be one of {list(GRADIENTS)}, got {gradient!r}")
        if not warm_radius > 0:
            raise ValueError(f"{name}: warm_radius must be > 0, got {warm_radius!r}")
        self.tolerance, self.max_iterations = float(tolerance), int(max_iterations)
        self.adjoint_tolerance, self.adjoint_iterations = float(adjoint_tolerance), int(adjoint_iterations)
        self.gradient, self.warm_start, self.warm_radius = gradient, bool(warm_start), float(warm_radius)
        self.last_report: SolveReport | None = None
        self._warm: dict = {}
        self.reset_stats()

    def problem(self, y: torch.Tensor, physics: LinearPhysics) -> ProxGradientProblem:
        raise NotImplementedError

    def reset_stats(self) -> None:
        """Zero the counters in `stats` and forget the warm starts."""
        self.stats = dict(solves=0, images=0, iterations=0, not_converged=0, adjoint_solves=0,
                          adjoint_iterations=0, adjoint_not_converged=0, forward_history=[], adjoint_history=[])
        self._warm = {}

    # -- warm starts and bookkeeping ----------------------------------------------------------
    def _start(self, y: torch.Tensor, problem: ProxGradientProblem) -> torch.Tensor | None:
        if not self.warm_start:
            return None
        last = self._warm.get(("z", tuple(y.shape), y.dtype, y.device))
        if last is None:
            return None
        y_last, z_last = last
        with torch.no_grad():
            close = torch.linalg.vector_norm((y - y_last).flatten(1), dim=1) \
                <= self.warm_radius * torch.linalg.vector_norm(y_last.flatten(1), dim=1)
            if not bool(close.any()):
                return None
            cold = problem.initial(y)
            return torch.where(close.view(-1, 1, 1, 1), z_last, cold)

    def _after_solve(self, y: torch.Tensor, z: torch.Tensor, report: SolveReport) -> None:
        self.last_report = report
        self.stats["solves"] += 1
        self.stats["images"] += int(report.iterations.numel())
        self.stats["iterations"] += int(report.iterations.sum())
        self.stats["not_converged"] += int((~report.converged).sum())
        self.stats["forward_history"].append(float(report.iterations.double().mean()))
        if self.warm_start:
            self._warm[("z", tuple(y.shape), y.dtype, y.device)] = (y.detach().clone(), z.detach().clone())

    def _adjoint_start(self, v: torch.Tensor) -> torch.Tensor | None:
        return self._warm.get(("u", tuple(v.shape), v.dtype, v.device)) if self.warm_start else None

    def _after_adjoint(self, u: torch.Tensor, report) -> None:
        self.stats["adjoint_solves"] += 1
        self.stats["adjoint_iterations"] += int(report.iterations.sum())
        self.stats["adjoint_history"].append(float(report.iterations.double().mean()))
        self.stats["adjoint_not_converged"] += int((report.residual > self.adjoint_tolerance).sum())
        if self.warm_start:
            self._warm[("u", tuple(u.shape), u.dtype, u.device)] = u.detach().clone()

    # -- calls ----------------------------------------------------------------------------------
    def forward(self, y: torch.Tensor, physics: LinearPhysics) -> torch.Tensor:
        problem = self.problem(y, physics)
        z0 = self._start(y, problem)
        if self.gradient == "unroll" and torch.is_grad_enabled() and y.requires_grad:
            z, report = solve(problem, y, z0, self.tolerance, self.max_iterations, track=True)
            self._after_solve(y, z, report)
            return z
        return _ImplicitSolve.apply(y, self, problem, z0)

    def solve_point(self, y: torch.Tensor, physics: LinearPhysics) -> tuple[ProxGradientProblem, FixedPoint]:
        """The fixed point at y (warm-started like `forward`), for Jacobian products."""
        problem = self.problem(y, physics)
        point = fixed_point(problem, y, self._start(y, problem), self.tolerance, self.max_iterations)
        self._after_solve(y, point.z, point.report)
        return problem, point


class ConvergedCS(ConvergedSolver):
    """The reference's problem (`reference`: the CSReconstructor whose weights, wavelet, eps and
    scaling are used; its iteration count is not) solved to a tolerance; keywords as ConvergedSolver."""

    def __init__(self, reference: CSReconstructor, **options):
        if not isinstance(reference, CSReconstructor):
            raise ValueError(f"ConvergedCS: reference must be a CSReconstructor, got {type(reference).__name__}")
        super().__init__(**options)
        self.reference = reference

    @property
    def params(self) -> dict:
        """Hyper-parameters for rows: the reference's weights and the stopping rule."""
        params = {k: v for k, v in self.reference.params.items() if k != "iterations"}
        return {**params, "tolerance": self.tolerance, "max_iterations": self.max_iterations,
                "gradient": self.gradient}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items())

    def problem(self, y: torch.Tensor, physics: LinearPhysics) -> CSProblem:
        real = y.real.dtype if torch.is_complex(y) else y.dtype
        return CSProblem(self.reference, physics, tuple(physics.image_shape[-2:]), y.device, real)


def singular_direction(solver: ConvergedSolver, physics: LinearPhysics, x: torch.Tensor, iterations: int = 20,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Top right singular vector of r -> z*(A(x + r)) at r = 0 per image, by power iteration on J^T J
    with implicit Jacobian products (two CG solves per step): unit images (B, 1, n, n)."""
    with torch.no_grad():
        y = physics.A(x)
        problem, point = solver.solve_point(y, physics)
        device = generator.device if generator is not None else x.device
        v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
        tiny = torch.finfo(x.dtype).tiny
        for _ in range(iterations):
            v = v / torch.linalg.vector_norm(v.flatten(1), dim=1).clamp_min(tiny).view(-1, 1, 1, 1)
            jv, _ = implicit_jvp(problem, point, physics.A(v), solver.adjoint_tolerance, solver.adjoint_iterations)
            grad_y, _, _ = implicit_vjp(problem, point, jv, solver.adjoint_tolerance, solver.adjoint_iterations)
            v = _real(physics.A_adjoint(grad_y))
        return v / torch.linalg.vector_norm(v.flatten(1), dim=1).clamp_min(tiny).view(-1, 1, 1, 1)


def make_converged(physics: LinearPhysics, *, tolerance: float = 1e-5, max_iterations: int = 5000,
                   gradient: str = "implicit", **overrides) -> ConvergedCS:
    """The reference with the operator's `reference_defaults` (any field overridden), solved to `tolerance`."""
    return ConvergedCS(make_reference(physics, **overrides), tolerance=tolerance, max_iterations=max_iterations,
                       gradient=gradient)


__all__ = ["CSProblem", "ConvergedCS", "ConvergedSolver", "GRADIENTS", "make_converged", "singular_direction"]
