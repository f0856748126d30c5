"""Worst case at a budget and ball point gain (tasks/budget.py) against exact answers and controls."""

from __future__ import annotations

import math

import pytest
import torch

from survey.metrics import norms
from survey.nets.exact import ConvolutionNet, IdentityNet, MatrixNet, PlantedRidgeNet, TikhonovNet
from survey.physics import make_physics
from survey.solvers.cs import make_reference
from survey.tasks.budget import (ball_directions, measured_mask, old_persistence_rule, paired_worst_case,
                                 point_gain, top_singular_direction, worst_case)

N = 16
BUDGETS = (0.01, 0.05, 0.2)


def images(count: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mri():
    return make_physics("mri", size=N, ratio=0.4, mask="gaussian-lines", seed=0).to(torch.float64)


def linear_map(net, physics) -> torch.Tensor:
    """The dense matrix of r -> f(A(x + r)) - f(Ax) (rows: output pixels)."""
    basis = torch.eye(N * N, dtype=torch.float64).view(N * N, 1, N, N)
    return (net(physics.A(basis), physics) - net(physics.A(torch.zeros_like(basis[:1])), physics)).view(N * N, -1).T


def best_gain(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sigma_1(L) ||x|| / ||L x||: the exact worst-case gain of a linear f(A .) = L at every budget."""
    return torch.linalg.svdvals(matrix)[0] * norms(x) / norms(x.flatten(1) @ matrix.T)


def test_matrix_net_reaches_its_top_singular_value_at_every_budget():
    physics, x = make_physics("denoise", size=N), images()
    net = MatrixNet.with_spectrum(N, torch.linspace(0.2, 3.0, N * N), generator=gen(1))
    found = worst_case(net, physics, x, BUDGETS, iterations=100, restarts=2, generator=gen())
    ratio = found.gain / best_gain(net.matrix, x)
    assert found.gain.shape == (3, 2) and found.r.shape == (3, 2, 1, N, N)
    assert float(ratio.min()) >= 0.99 and float(ratio.max()) <= 1 + 1e-9
    assert torch.allclose(found.norm_ratio, torch.tensor(BUDGETS, dtype=torch.float64).view(-1, 1))
    # The trace levels off: the last half adds little, and it never decreases.
    assert bool((found.trace[..., 1:] >= found.trace[..., :-1]).all())
    assert float((found.trace[..., 2] / found.trace[..., 1]).max()) < 1.01


def test_convolution_net_reaches_its_top_singular_value():
    physics, x = make_physics("denoise", size=N), images()
    kernel = torch.zeros(N, N, dtype=torch.float64)
    kernel[0, 0], kernel[0, 1], kernel[1, 0], kernel[2, 3] = 1.0, 0.8, -0.5, 0.3
    net = ConvolutionNet(kernel)
    found = worst_case(net, physics, x, BUDGETS, iterations=100, restarts=2, generator=gen())
    exact = net.sigma_max() * norms(x) / norms(net(x, physics))
    assert float((found.gain / exact).min()) >= 0.99


def test_top_singular_direction_as_a_start():
    physics, x = make_physics("denoise", size=N), images(1)
    values = torch.cat([torch.tensor([3.0, 2.0]), torch.linspace(0.1, 1.9, N * N - 2)])
    net = MatrixNet.with_spectrum(N, values, generator=gen(2))
    v1 = top_singular_direction(net, physics, x, iterations=30, generator=gen())
    assert abs(float((v1 * net.top_singular_vector()).sum())) > 0.999
    found = worst_case(net, physics, x, BUDGETS, iterations=3, restarts=0, starts=v1[None], generator=gen())
    assert float((found.gain / best_gain(net.matrix, x)).min()) > 0.999


def test_radon_fbp_identity_with_both_gradient_rules():
    physics = make_physics("radon", size=N, views=8).to(torch.float64)
    net, x = IdentityNet(), images()
    found = worst_case(net, physics, x, (0.02, 0.1), iterations=60, restarts=1, generator=gen())
    assert found.rules == ("adjoint", "fbp")
    assert float((found.gain / best_gain(linear_map(net, physics), x)).min()) >= 0.99


def test_measurement_domain_respects_budget_and_mask():
    physics, x = mri(), images()
    y = physics.A(x)
    found = worst_case(TikhonovNet(0.05), physics, x, (0.01, 0.05), domain="measurement", iterations=10,
                       restarts=2, generator=gen())
    e = found.r
    assert torch.is_complex(e) and e.shape == (2, 2, *y.shape[1:])
    assert bool((found.norm_ratio <= torch.tensor([[0.01], [0.05]], dtype=torch.float64) * (1 + 1e-9)).all())
    assert torch.allclose(norms(e.flatten(0, 1)).view(2, 2) / norms(y).view(1, -1), found.norm_ratio)
    off = 1 - measured_mask(physics, y)
    assert float((e * off).abs().max()) == 0.0
    assert bool((found.gain > 0).all())


def test_reference_as_target_gets_the_same_search():
    physics, x = mri(), images()
    reference = make_reference(physics, iterations=8)
    targets = {"H": IdentityNet(), "reference": reference}
    start = paired_worst_case(targets, physics, x, (0.02, 0.05), iterations=0, restarts=1, generator=gen(5))
    assert torch.equal(start["H"].r, start["reference"].r)  # identical starts
    found = paired_worst_case(targets, physics, x, (0.02, 0.05), iterations=5, restarts=1, generator=gen(5))
    assert not reference.unrolled  # the original is untouched; the search ran a copy unrolled
    got = found["reference"]
    assert bool(torch.isfinite(got.gain).all())
    assert bool((got.gain >= start["reference"].gain - 1e-12).all())
    assert bool((got.norm_ratio <= torch.tensor([[0.02], [0.05]], dtype=torch.float64) * (1 + 1e-9)).all())


@pytest.mark.parametrize("net", [IdentityNet(), TikhonovNet(0.05)], ids=["identity", "tikhonov"])
def test_controls_never_have_bad_ball_points_but_pass_the_old_rule(net):
    """Linear controls: every point gain is at most ||x|| / ||L x|| < 2, so P(point_gain >= 2) = 0;
    yet the replaced rule 'the artefact persists' says yes at every draw."""
    physics, x = mri(), images()
    found = worst_case(net, physics, x, (0.05,), iterations=30, restarts=1, generator=gen())
    r = found.r[0]
    bound = norms(x) / norms(net(physics.A(x), physics))
    assert float(bound.max()) < 2
    v = ball_directions(physics, x, r, 0.25, 400, generator=gen(7))
    assert torch.allclose(norms(v.flatten(0, 1)).view(400, 2), 0.25 * norms(r).view(1, 2))
    pg = point_gain(net, physics, x, r, v, batch=300)
    assert pg.gain.shape == (400, 2)
    assert float(pg.gain.max()) <= float(bound.max()) + 1e-9
    assert float((pg.gain >= 2).double().mean()) == 0.0
    assert bool(old_persistence_rule(pg).all())


def test_planted_ridge_ball_probability():
    physics = make_physics("denoise", size=N)
    x0 = images(1)
    s = torch.randn(1, 1, N, N, dtype=torch.float64, generator=gen(3))
    radius = 0.25
    net = PlantedRidgeNet(x0, s, gain=10.0, c0=PlantedRidgeNet.ball_cosine(0.0, radius), width=0.001)
    # Its worst case: a random start never finds the ridge, the planted direction does.
    blind = worst_case(net, physics, x0, (0.05,), iterations=20, restarts=2, generator=gen())
    found = worst_case(net, physics, x0, (0.05,), iterations=5, restarts=0, starts=net.direction[None])
    assert float(blind.gain.max()) < 1.5
    assert float(found.gain[0, 0]) == pytest.approx(10.0, rel=1e-9)
    draws = 2000
    v = ball_directions(physics, x0, found.r[0], radius, draws, generator=gen(11))
    pg = point_gain(net, physics, x0, found.r[0], v, batch=500)
    frequency = float((pg.gain >= 2).double().mean())
    planted = net.ball_probability(radius)
    assert 0.1 < planted < 0.9
    assert abs(frequency - planted) <= 4 * math.sqrt(planted * (1 - planted) / draws)
