"""Prox-gradient problems solved to a stated tolerance, and differentiated at their fixed point.

A problem min_z f(z, y) + g(z) (z a real image batch (B, 1, n, n), f smooth with an L-Lipschitz
gradient, g with a prox) has the minimiser z* as the fixed point of the prox-gradient map

    T(z, y) = prox_{step g}(z - step grad_z f(z, y)),     step = 1 / L.

`solve` runs FISTA with adaptive (gradient) restart until, per image, both the relative change
||z_k - z_{k-1}|| / ||z_k|| and the fixed-point residual ||z_k - w_{k-1}|| / (step ||z_k||) (w the
momentum point: the gradient mapping at w relative to ||z||, so independent of the step size; T is
non-expansive, so it bounds ||T(z_k) - z_k|| / (step ||z_k||)) are below `tolerance`,
or the iteration cap is reached; an image that has stopped is frozen, so a batch gives the per-image
results. The report says, per image, how many iterations it took and whether it converged.

Differentiation (implicit function theorem): with P the prox's Jacobian at the fixed point (here a
symmetric projection: an l1 prox in an orthogonal basis keeps the active coefficients), differentiating
z = T(z, y) gives dz in range(P) and

    (P Hess_z f P) dz = P b(dy),     b(dy) = -d/dy grad_z f(z, y) . dy,

so a vector-Jacobian product v -> (dz/dy)^T v is one conjugate-gradient solve (P Hess P) u = P v
followed by b^T u, and a Jacobian-vector product is one solve with P b(dy) on the right. P Hess P is
symmetric positive semi-definite on range(P); CG started in range(P) stays there and converges to the
least-norm solution when it is singular. `cg` reports its iterations and relative residual per image.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch


class SolveReport(NamedTuple):
    """Per image (B,): iterations used, last relative change, fixed-point residual (the gradient
    mapping's norm over ||z||), and converged = both below the tolerance before the cap."""

    iterations: torch.Tensor
    rel_change: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    tolerance: float
    cap: int


class ProxGradientProblem:
    """The pieces `solve` and the implicit derivative need; subclasses implement every method.

    step: 1 / L (float). Tensors are (B, 1, n, n) images unless said otherwise; `y` is the batch of
    measurements the problem was built for, indexed along the batch as `y[idx]`.
    """

    step: float

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        """A cold start z0 from the measurements."""
        raise NotImplementedError

    def gradient(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """grad_z f(z, y)."""
        raise NotImplementedError

    def prox(self, v: torch.Tensor) -> torch.Tensor:
        """prox_{step g}(v)."""
        raise NotImplementedError

    def support(self, v: torch.Tensor) -> torch.Tensor:
        """The prox's Jacobian at v, as whatever `project` takes (e.g. a 0/1 coefficient mask)."""
        raise NotImplementedError

    def project(self, support: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """P w, P the prox's (symmetric projection) Jacobian described by `support`."""
        raise NotImplementedError

    def hessian(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Hess_z f(z) w (the data term's Hessian may not depend on y)."""
        raise NotImplementedError

    def data_jvp(self, dy: torch.Tensor) -> torch.Tensor:
        """b(dy) = -(d/dy grad_z f) dy: measurement-shaped dy -> image."""
        raise NotImplementedError

    def data_vjp(self, u: torch.Tensor) -> torch.Tensor:
        """b^T u: image -> measurement-shaped gradient (torch's convention for complex y)."""
        raise NotImplementedError

    def step_map(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """T(z, y)."""
        return self.prox(z - self.step * self.gradient(z, y))


def _norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.ndim - 1)))


def check_tolerance(tolerance: float, cap: int, what: str = "solver") -> None:
    """ValueError naming the parameter when the tolerance is not in (0, 0.5) or the cap not an integer >= 1."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or not 0 < tolerance < 0.5:
        raise ValueError(f"{what}: tolerance must be a number in (0, 0.5), got {tolerance!r}")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"{what}: iteration cap must be an integer >= 1, got {cap!r}")


def solve(problem: ProxGradientProblem, y: torch.Tensor, z0: torch.Tensor | None, tolerance: float,
          cap: int, track: bool = False) -> tuple[torch.Tensor, SolveReport]:
    """FISTA with adaptive restart to `tolerance` (see the module docstring), at most `cap` iterations.

    z0: a warm start (B, 1, n, n) or None for `problem.initial(y)`. track=False runs without autograd
    and updates only the images still running; track=True keeps the graph through every iteration
    (the unrolled cross-check), freezing stopped images out of place.
    """
    check_tolerance(tolerance, cap)
    with torch.enable_grad() if track else torch.no_grad():
        z = problem.initial(y) if z0 is None else z0.to(dtype=y.real.dtype if torch.is_complex(y) else y.dtype)
        z = z if track else z.detach().clone()
        count = z.shape[0]
        w, t = z.clone(), torch.ones(count, dtype=z.dtype, device=z.device)
        iterations = torch.zeros(count, dtype=torch.long, device=z.device)
        change = torch.full((count,), math.inf, dtype=z.dtype, device=z.device)
        residual = change.clone()
        converged = torch.zeros(count, dtype=torch.bool, device=z.device)
        active = torch.arange(count, device=z.device)
        tiny = torch.finfo(z.dtype).tiny
        for k in range(cap):
            whole = active.numel() == count  # no gather / scatter while every image runs
            z_a, w_a = (z, w) if whole else (z[active], w[active])
            z_new = problem.step_map(w_a, y if whole else y[active])
            size = _norms(z_new).clamp_min(tiny)
            moved, mapped = z_new - z_a, z_new - w_a
            change_a = (_norms(moved) / size).detach()
            residual_a = (_norms(mapped) / (problem.step * size)).detach()
            restart = _inner(mapped, moved) < 0
            t_a = t if whole else t[active]
            t_next = (1 + torch.sqrt(1 + 4 * t_a * t_a)) / 2
            beta = torch.where(restart, torch.zeros_like(t_a), (t_a - 1) / t_next)
            w_new = z_new + _view(beta, z_new) * moved
            done = (change_a < tolerance) & (residual_a < tolerance)
            if whole and not bool(done.any()):
                z, w = z_new, w_new
                t = torch.where(restart, torch.ones_like(t_a), t_next)
                change, residual = change_a, residual_a
                iterations.fill_(k + 1)
                continue
            if track:
                z, w = z.index_copy(0, active, z_new), w.index_copy(0, active, w_new)
            else:
                z[active], w[active] = z_new, w_new
            t[active] = torch.where(restart, torch.ones_like(t_a), t_next)
            iterations[active] = k + 1
            change[active], residual[active] = change_a, residual_a
            converged[active] = done
            active = active[~done]
            if active.numel() == 0:
                break
    return z, SolveReport(iterations, change, residual, converged, float(tolerance), int(cap))


class CGReport(NamedTuple):
    """Per image (B,): CG iterations and the final relative residual ||P v - M u|| / ||P v||."""

    iterations: torch.Tensor
    residual: torch.Tensor


def cg(apply: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, x0: torch.Tensor | None,
       tolerance: float, cap: int) -> tuple[torch.Tensor, CGReport]:
    """Batched conjugate gradients for M u = rhs, M symmetric PSD acting per image; stops an image when
    its relative residual is below `tolerance` (at most `cap` iterations). A start x0 is first scaled per
    image by the alpha minimising ||rhs - alpha M x0|| (0 where M x0 = 0), so a warm start never begins with
    a residual above ||rhs||."""
    if x0 is None:
        x, r = torch.zeros_like(rhs), rhs.clone()
    else:
        m0 = apply(x0)
        alpha = _inner(rhs, m0) / _inner(m0, m0).clamp_min(torch.finfo(rhs.dtype).tiny)
        x, r = _view(alpha, x0) * x0, rhs - _view(alpha, m0) * m0
    p = r.clone()
    rs = _inner(r, r)
    scale = _norms(rhs).clamp_min(torch.finfo(rhs.dtype).tiny)
    iterations = torch.zeros(rhs.shape[0], dtype=torch.long, device=rhs.device)
    for k in range(cap):
        running = rs.sqrt() > tolerance * scale
        if not bool(running.any()):
            break
        mp = apply(p)
        curvature = _inner(p, mp)
        ok = running & (curvature > 0)
        alpha = torch.where(ok, rs / curvature.clamp_min(torch.finfo(rhs.dtype).tiny), torch.zeros_like(rs))
        x = x + _view(alpha, x) * p
        r = r - _view(alpha, r) * mp
        rs_new = _inner(r, r)
        beta = torch.where(ok, rs_new / rs.clamp_min(torch.finfo(rhs.dtype).tiny), torch.zeros_like(rs))
        p = r + _view(beta, p) * p
        rs = torch.where(ok, rs_new, rs)
        iterations = iterations + ok.long()
        if not bool(ok.any()):
            break
    return x, CGReport(iterations, rs.sqrt() / scale)


class FixedPoint(NamedTuple):
    """A solved problem: the solution z (B, 1, n, n), the prox's support there, and the solve report."""

    z: torch.Tensor
    support: torch.Tensor
    report: SolveReport


def fixed_point(problem: ProxGradientProblem, y: torch.Tensor, z0: torch.Tensor | None, tolerance: float,
                cap: int) -> FixedPoint:
    """`solve` without autograd, and the prox's support at the solution (for the implicit derivative)."""
    z, report = solve(problem, y, z0, tolerance, cap)
    with torch.no_grad():
        support = problem.support(z - problem.step * problem.gradient(z, y))
    return FixedPoint(z, support, report)


def implicit_system(problem: ProxGradientProblem, point: FixedPoint) -> Callable[[torch.Tensor], torch.Tensor]:
    """w -> P Hess P w at the fixed point, for w in range(P) (then P w = w, so one projection suffices:
    CG started in range(P) with a right-hand side there keeps every iterate and direction there)."""
    def apply(w: torch.Tensor) -> torch.Tensor:
        return problem.project(point.support, problem.hessian(point.z, w))
    return apply


def implicit_vjp(problem: ProxGradientProblem, point: FixedPoint, v: torch.Tensor, tolerance: float, cap: int,
                 u0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, CGReport]:
    """(dz*/dy)^T v: returns (the measurement-shaped gradient, the CG solution u for warm starts, report)."""
    with torch.no_grad():
        rhs = problem.project(point.support, v)
        start = None if u0 is None else problem.project(point.support, u0)
        u, report = cg(implicit_system(problem, point), rhs, start, tolerance, cap)
        return problem.data_vjp(u), u, report


def implicit_jvp(problem: ProxGradientProblem, point: FixedPoint, dy: torch.Tensor, tolerance: float,
                 cap: int) -> tuple[torch.Tensor, CGReport]:
    """(dz*/dy) dy: measurement-shaped dy -> image (B, 1, n, n), and the CG report."""
    with torch.no_grad():
        rhs = problem.project(point.support, problem.data_jvp(dy))
        return cg(implicit_system(problem, point), rhs, None, tolerance, cap)


__all__ = ["CGReport", "FixedPoint", "ProxGradientProblem", "SolveReport", "cg", "check_tolerance",
           "fixed_point", "implicit_jvp", "implicit_system", "implicit_vjp", "solve"]
