"""Exact and planted networks: their closed forms hold (survey/nets/exact.py)."""

from __future__ import annotations

import math

import pytest
import torch

from survey.metrics import norms
from survey.nets.exact import ConvolutionNet, IdentityNet, MatrixNet, PlantedRidgeNet, TikhonovNet
from survey.physics import make_physics

N = 16
OPERATORS = {
    "denoise": dict(kind="denoise", size=N),
    "mri": dict(kind="mri", size=N, ratio=0.4, mask="gaussian-lines", seed=0),
    "pmri": dict(kind="pmri", size=N, ratio=0.4, mask="uniform-lines", seed=0, coils=4),
    "radon": dict(kind="radon", size=N, views=8),
}


def physics_for(name: str):
    params = dict(OPERATORS[name])
    return make_physics(params.pop("kind"), **params).to(torch.float64)


def images(count: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_identity_net_is_exact_on_denoise():
    physics, x = physics_for("denoise"), images()
    assert torch.equal(IdentityNet()(physics.A(x), physics), x)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_tikhonov_solves_its_normal_equations(name):
    physics, x = physics_for(name), images()
    y = physics.A(x)
    mu = 0.05
    z = TikhonovNet(mu)(y, physics)
    assert z.shape == x.shape and not torch.is_complex(z)
    residual = physics.A_adjoint(physics.A(z) - y)
    residual = (residual.real if torch.is_complex(residual) else residual) + mu * z
    assert float((norms(residual) / norms(physics.A_adjoint(y))).max()) < 1e-8


def test_tikhonov_gradient_is_the_linear_map():
    """Implicit differentiation (CG backward) equals the exact linear map: f is linear, so J^T w
    satisfies <J^T w, y> = <w, f(y)>."""
    physics = physics_for("radon")
    net = TikhonovNet(0.1)
    y = physics.A(images(1)).requires_grad_(True)
    w = torch.randn(1, 1, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = net(y, physics)
    (grad,) = torch.autograd.grad((out * w).sum(), y)
    assert float((grad * y.detach()).sum()) == pytest.approx(float((w * out.detach()).sum()), rel=1e-8)


def test_matrix_net_has_the_requested_spectrum():
    values = torch.linspace(0.5, 4.0, 10, dtype=torch.float64)
    net = MatrixNet.with_spectrum(8, values, generator=torch.Generator().manual_seed(0))
    got = net.singular_values()
    assert torch.allclose(got[:10], values.flip(0), atol=1e-10) and float(got[10:].abs().max()) < 1e-10
    physics = make_physics("denoise", size=8)
    v = net.top_singular_vector()
    assert float(norms(net(physics.A(v), physics))) == pytest.approx(4.0, rel=1e-10)


def test_convolution_net_spectrum_is_its_transfer_function():
    n = 8
    kernel = torch.zeros(n, n, dtype=torch.float64)
    kernel[0, 0], kernel[0, 1], kernel[1, 0], kernel[2, 3] = 1.0, 0.8, -0.5, 0.3
    net = ConvolutionNet(kernel)
    physics = make_physics("denoise", size=n)
    basis = torch.eye(n * n, dtype=torch.float64).view(n * n, 1, n, n)
    dense = net(basis, physics).view(n * n, n * n)  # rows: images of the basis vectors
    assert torch.linalg.svdvals(dense)[0].item() == pytest.approx(net.sigma_max(), rel=1e-10)
    v = net.top_singular_vector()
    assert float(norms(net(v, physics))) == pytest.approx(net.sigma_max(), rel=1e-10)


def test_planted_ridge_gain_is_a_function_of_the_angle():
    physics = physics_for("denoise")
    x0 = images(1)
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(1, 1, N, N, dtype=torch.float64, generator=gen)
    net = PlantedRidgeNet(x0, s, gain=10.0, c0=0.95, width=0.02)
    s = net.direction
    y0 = physics.A(x0)
    assert torch.allclose(net(y0, physics), x0)
    for eps in (0.01, 0.2):  # the planted worst case has gain K at every budget
        r = eps * norms(x0) * s
        assert float(norms(net(physics.A(x0 + r), physics) - x0) / norms(r)) == pytest.approx(10.0, rel=1e-10)
    # Random angles: measured gain equals G(cos).
    w = torch.randn(64, 1, N, N, dtype=torch.float64, generator=gen)
    w = w - (w * s).flatten(1).sum(1).view(-1, 1, 1, 1) * s
    w = w / norms(w).view(-1, 1, 1, 1)
    cos = torch.linspace(0.9, 1.0, 64, dtype=torch.float64)
    r = 0.03 * (cos.view(-1, 1, 1, 1) * s + torch.sqrt(1 - cos * cos).view(-1, 1, 1, 1) * w)
    measured = norms(net(physics.A(x0 + r), physics) - x0) / norms(r)
    assert torch.allclose(measured, net.gain_at(cos), rtol=1e-9)
    assert net.ball_probability(0.25, threshold=0.0) == pytest.approx(1.0, abs=1e-12)
    assert net.ball_probability(0.25, threshold=11.0) == 0.0
    assert 0.0 <= net.ball_probability(0.25) <= 1.0 and math.isfinite(net.ball_probability(0.25))
