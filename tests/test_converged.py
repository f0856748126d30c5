"""The reference solved to a tolerance (survey.solvers.fixed_point, survey.solvers.converged): reports,
implicit gradients against finite differences and the unroll, and a linear map's exact worst case."""

from __future__ import annotations

import pytest
import torch

from benchmarks import converged_setup
from benchmarks.converged_setup import OPERATORS
from survey.metrics import norms
from survey.solvers import tv
from survey.solvers.converged import ConvergedCS, ConvergedSolver, singular_direction
from survey.solvers.cs import make_reference
from survey.solvers.fixed_point import ProxGradientProblem, cg, solve
from survey.tasks.budget import worst_case

N = 16


def operator(name: str):
    return converged_setup.operator(name, N)


def images(count: int = 4, seed: int = 0) -> torch.Tensor:
    return converged_setup.blobs(count, N, seed)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def directional(grad: torch.Tensor, dy: torch.Tensor) -> float:
    return float((grad.conj() * dy).real.sum() if torch.is_complex(grad) else (grad * dy).sum())


# ---------------------------------------------------------------- solve to a tolerance


def test_solve_stops_at_the_tolerance_reports_the_cap_and_is_batch_independent():
    physics, x = operator("mri"), images(3)
    y = physics.A(x)
    solver = ConvergedCS(make_reference(physics), tolerance=1e-6, max_iterations=20000, warm_start=False)
    z = solver(y, physics)
    report = solver.last_report
    assert bool(report.converged.all())
    assert bool((report.rel_change < 1e-6).all()) and bool((report.residual < 1e-6).all())
    alone = solver(y[1:2], physics)
    assert torch.allclose(alone, z[1:2], atol=1e-9)
    # The minimiser: the objective is below the 200-iteration FISTA's and a random nudge raises it.
    reference = make_reference(physics)
    assert bool((reference.objective(z, y, physics) <= reference.objective(reference(y, physics), y, physics)).all())
    nudge = 1e-3 * torch.randn(z.shape, generator=gen(3), dtype=z.dtype)
    assert bool((reference.objective(z, y, physics) < reference.objective(z + nudge, y, physics)).all())
    capped = ConvergedCS(make_reference(physics), tolerance=1e-6, max_iterations=5, warm_start=False)
    capped(y, physics)
    assert not bool(capped.last_report.converged.any())
    assert capped.last_report.iterations.tolist() == [5, 5, 5]
    assert capped.stats["not_converged"] == 3


def test_warm_start_reaches_the_same_solution_in_fewer_iterations():
    physics, x = operator("radon"), images(2)
    y = physics.A(x)
    solver = ConvergedCS(make_reference(physics), tolerance=1e-7, max_iterations=20000)
    solver(y, physics)
    cold = solver.last_report.iterations
    nudged = y + 1e-3 * physics.A(torch.randn(x.shape, generator=gen(1), dtype=x.dtype))
    warm = solver(nudged, physics)
    fresh = ConvergedCS(make_reference(physics), tolerance=1e-7, max_iterations=20000, warm_start=False)
    expected = fresh(nudged, physics)
    assert bool((solver.last_report.iterations < cold).all())
    # Per call, the mean iterations per image: the cold solve's, then the warm one's.
    assert solver.stats["forward_history"] == [float(cold.double().mean()),
                                               float(solver.last_report.iterations.double().mean())]
    # Two solves to a residual of 1e-7 agree to the problem's conditioning times that.
    assert float(norms(warm - expected).max() / norms(expected).min()) < 1e-4


@pytest.mark.parametrize("bad,match", [(dict(tolerance=0.0), "tolerance"), (dict(tolerance=0.7), "tolerance"),
                                       (dict(tolerance=float("nan")), "tolerance"),
                                       (dict(max_iterations=0), "iteration cap"),
                                       (dict(adjoint_tolerance=-1.0), "tolerance"),
                                       (dict(gradient="backprop"), "gradient")])
def test_bad_solver_settings_name_the_parameter(bad, match):
    physics = operator("mri")
    with pytest.raises(ValueError, match=match):
        ConvergedCS(make_reference(physics), **bad)


# ---------------------------------------------------------------- gradients at the fixed point


@pytest.mark.parametrize("name", ["mri", "radon"])
def test_implicit_gradient_matches_finite_differences_on_the_smooth_problem(name):
    # Without the wavelet l1 the problem is smooth, so the solution map is differentiable everywhere.
    physics, x = operator(name), images(2)
    y = physics.A(x)
    reference = make_reference(physics, lam_w=0.0)
    solver = ConvergedCS(reference, tolerance=1e-9, max_iterations=50000, adjoint_tolerance=1e-10,
                         warm_start=False)
    v = torch.randn(x.shape, generator=gen(1), dtype=x.dtype)
    dy = physics.A(torch.randn(x.shape, generator=gen(2), dtype=x.dtype))
    u = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((solver(u, physics) * v).sum(), u)
    h = 1e-5
    fd = float(((solver(y + h * dy, physics) - solver(y - h * dy, physics)) * v).sum() / (2 * h))
    assert abs(directional(grad, dy) - fd) <= 1e-4 * abs(fd)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_implicit_gradient_agrees_with_the_unroll_to_the_same_tolerance(name):
    physics, x = operator(name), images(2)
    y = physics.A(x)
    v = torch.randn(x.shape, generator=gen(1), dtype=x.dtype)
    grads = {}
    for rule in ("implicit", "unroll"):
        solver = ConvergedCS(make_reference(physics), tolerance=1e-6, max_iterations=20000, gradient=rule,
                             adjoint_tolerance=1e-8, warm_start=False)
        u = y.clone().requires_grad_(True)
        (grads[rule],) = torch.autograd.grad((solver(u, physics) * v).sum(), u)
    # Near-threshold wavelet coefficients make the unroll's derivative differ a little from the fixed
    # point's at a finite tolerance; the search needs the direction.
    a, b = torch.view_as_real(grads["implicit"]) if torch.is_complex(y) else grads["implicit"], \
        torch.view_as_real(grads["unroll"]) if torch.is_complex(y) else grads["unroll"]
    cosine = (a * b).flatten(1).sum(1) / (norms(a) * norms(b))
    assert float(cosine.min()) > 0.995
    assert float((norms(a) / norms(b) - 1).abs().max()) < 0.05


def test_tv_hessian_is_the_derivative_of_the_tv_gradient():
    x = images(2)
    w = torch.randn(x.shape, generator=gen(4), dtype=x.dtype)
    h = 1e-6
    fd = (tv.smoothed_tv_grad(x + h * w, 3e-3) - tv.smoothed_tv_grad(x - h * w, 3e-3)) / (2 * h)
    assert torch.allclose(tv.smoothed_tv_hessian(x, w, 3e-3), fd, rtol=1e-5, atol=1e-6 * float(fd.abs().max()))


@pytest.mark.slow  # the unroll through a solve to 1e-7 (benchmarks/converged_agreement.py runs 8 iterations)
@pytest.mark.parametrize("name", list(OPERATORS))
def test_search_gains_with_implicit_gradients_match_the_unroll_within_3_percent(name):
    # At 1e-6 the two searches drift apart on MRI (5% after 20 iterations); at 1e-7 they agree.
    physics, x = operator(name), images(4)
    gains = {}
    for rule in ("implicit", "unroll"):
        solver = ConvergedCS(make_reference(physics), tolerance=1e-7, max_iterations=50000, gradient=rule,
                             adjoint_tolerance=1e-4)
        found = worst_case(solver, physics, x, (0.02,), iterations=3, restarts=1, gradient="adjoint",
                           generator=gen(7))
        assert solver.stats["not_converged"] == 0
        gains[rule] = found.gain
    assert float((gains["implicit"] / gains["unroll"] - 1).abs().max()) < 0.03


# ---------------------------------------------------------------- a linear map through the same path


class SubspaceTikhonov(ProxGradientProblem):
    """f = ||A z - y||^2 / 2 + mu / 2 ||D z||^2 on images confined to a support (the prox projects onto
    it): a linear solution map z*(y) = m (m H m)^+ m Re A* y with H = Re A*A + mu D^T D."""

    def __init__(self, physics, support: torch.Tensor, mu: float):
        self.physics, self.mask, self.mu = physics, support, mu
        self.step = 1.0 / (1.0 + tv.GRADIENT_NORM_SQUARED * mu)

    def initial(self, y):
        return self.mask * self.physics.A_adjoint(y).real

    def gradient(self, z, y):
        return (self.physics.A_adjoint(self.physics.A(z) - y).real
                + self.mu * tv.gradient_adjoint(tv.gradient(z)))

    def prox(self, v):
        return self.mask * v

    def support(self, v):
        return self.mask

    def project(self, support, w):
        return support * w

    def hessian(self, z, w):
        return self.physics.A_adjoint(self.physics.A(w)).real + self.mu * tv.gradient_adjoint(tv.gradient(w))

    def data_jvp(self, dy):
        return self.physics.A_adjoint(dy).real

    def data_vjp(self, u):
        return self.physics.A(u)


class LinearSolver(ConvergedSolver):
    def __init__(self, support, mu, **options):
        super().__init__(**options)
        self.mask, self.mu = support, mu

    def problem(self, y, physics):
        return SubspaceTikhonov(physics, self.mask, self.mu)


def test_linear_map_through_the_converged_path_reaches_its_top_singular_value():
    physics, x = operator("mri"), images(2)
    yy, xx = torch.meshgrid(torch.arange(N), torch.arange(N), indexing="ij")
    support = (((yy - 7.5) ** 2 + (xx - 7.5) ** 2) < 36).to(torch.float64)
    solver = LinearSolver(support, 0.05, tolerance=1e-9, max_iterations=20000, adjoint_tolerance=1e-10)
    # The exact map r -> z*(A(x + r)) - z*(Ax) = L r, from the closed form on the support.
    inside = support.flatten().bool()
    basis = torch.eye(N * N, dtype=torch.float64).view(N * N, 1, N, N)
    problem = SubspaceTikhonov(physics, support, 0.05)
    hessian = problem.hessian(None, basis).view(N * N, -1)[:, inside][inside]
    data = physics.A_adjoint(physics.A(basis)).real.view(N * N, -1)[:, inside]
    matrix = torch.zeros(N * N, N * N, dtype=torch.float64)
    matrix[inside] = torch.linalg.solve(hessian, data.T)
    sigma = torch.linalg.svdvals(matrix)
    exact = sigma[0] * norms(x) / norms(x.flatten(1) @ matrix.T)
    # The implicit Jacobian products give a top singular vector (||L v1|| = sigma_1) ...
    # (sigma_1 = 1.038 against 1.011 for sigma_2: power iteration needs ~150 steps)
    v1 = singular_direction(solver, physics, x, iterations=150, generator=gen(2))
    assert float((norms(v1.flatten(1) @ matrix.T) / sigma[0]).min()) > 0.9999
    # ... and the search through the converged path, from it and a random start, reaches the exact gain.
    found = worst_case(solver, physics, x, (0.01, 0.05), iterations=10, restarts=1, starts=v1[None],
                       gradient="adjoint", generator=gen())
    assert solver.stats["not_converged"] == 0 and solver.stats["adjoint_not_converged"] == 0
    ratio = found.gain / exact
    assert float(ratio.min()) >= 0.999 and float(ratio.max()) <= 1 + 1e-6


def test_the_unregularised_control_gains_the_same_at_every_tolerance():
    # With lam_w = lam_tv = 0 the solver path solves least squares from H's image: a linear, well-posed map on
    # Fourier sampling, so its worst case cannot depend on where the solve stops once it has converged.
    physics, x = operator("mri"), images(2)
    gains = []
    for tolerance in (1e-4, 1e-6):
        solver = ConvergedCS(make_reference(physics, lam_w=0.0, lam_tv=0.0), tolerance=tolerance,
                             max_iterations=20000, adjoint_tolerance=1e-3)
        gains.append(worst_case(solver, physics, x, (0.02,), iterations=8, restarts=1, gradient="adjoint",
                                generator=gen(7)).gain)
        assert solver.stats["not_converged"] == 0
    assert torch.allclose(gains[0], gains[1], rtol=5e-3)
    assert float(gains[1].max()) < 1.05  # near the identity's 1, where the regularised solver reaches 3


def test_cg_scales_a_warm_start_so_it_never_starts_worse_than_zero():
    # A badly scaled start (100 times the solution, or its negative) is replaced by its best multiple: the
    # solve converges from it as from zero, and the exact solution as a start needs no iteration at all.
    g = gen(5)
    basis = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))[0]
    matrix = basis @ torch.diag(torch.logspace(0, 3, 64, dtype=torch.float64)) @ basis.T

    def apply(w):
        return (w.flatten(1) @ matrix).view(w.shape)

    rhs = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(matrix, rhs.flatten(1).T).T.reshape(rhs.shape)
    cold, cold_report = cg(apply, rhs, None, 1e-10, 2000)
    start = torch.stack([100 * exact[0], -exact[1], torch.randn(exact[2].shape, generator=g, dtype=torch.float64)])
    warm, warm_report = cg(apply, rhs, start, 1e-10, 2000)
    assert torch.allclose(cold, exact, atol=1e-6) and torch.allclose(warm, exact, atol=1e-6)
    assert bool((warm_report.residual < 1e-10).all())
    assert warm_report.iterations[:2].tolist() == [0, 0]  # a multiple of the solution is the solution
    _, again = cg(apply, rhs, exact, 1e-10, 2000)
    assert again.iterations.tolist() == [0, 0, 0]
