"""The wavelet transform as per-level matrix products (survey.solvers.wavelet_matrix) against Wavelet2D."""

from __future__ import annotations

import pytest
import torch

from survey.solvers.wavelet_matrix import MAX_SIDE, MatrixWavelet
from survey.solvers.wavelets import Wavelet2D


@pytest.mark.parametrize("wavelet,levels,shape", [("haar", 2, (16, 16)), ("db2", 3, (32, 16)), ("db4", 2, (16, 32)),
                                                  ("sym4", 3, (32, 32)), ("db2", 1, (8, 8))])
def test_matrix_wavelet_is_wavelet2d_forward_and_inverse(wavelet, levels, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, *shape, dtype=torch.float64, generator=g)
    bank = Wavelet2D(wavelet, levels)
    fast = MatrixWavelet(bank, shape, torch.float64, "cpu")
    assert fast.dense
    assert torch.allclose(fast(x), bank(x), atol=1e-12)
    assert torch.allclose(fast.inverse(x), bank.inverse(x), atol=1e-12)
    assert torch.allclose(fast.inverse(fast(x)), x, atol=1e-12)
    # The input is left alone (the fast path writes in place into its own copies).
    again = torch.randn(3, 1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_matrix_wavelet_gradients_are_the_adjoint():
    bank = Wavelet2D("db2", 3)
    fast = MatrixWavelet(bank, (16, 16), torch.float64, "cpu")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=g, requires_grad=True)
    c = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((fast(x) * c).sum(), x)
    assert torch.allclose(grad, bank.inverse(c), atol=1e-12)      # (W)^T c
    (grad,) = torch.autograd.grad((fast.inverse(x) * c).sum(), x)
    assert torch.allclose(grad, bank(c), atol=1e-12)              # (W^T)^T c = W c


def test_large_images_fall_back_to_the_convolutions():
    side = 2 * MAX_SIDE
    bank = Wavelet2D("db2", 3)
    fast = MatrixWavelet(bank, (side, side), torch.float32, "cpu")
    x = torch.randn(1, 1, side, side, generator=torch.Generator().manual_seed(2))
    assert not fast.dense
    assert torch.equal(fast(x), bank(x)) and torch.equal(fast.inverse(x), bank.inverse(x))


def test_the_unrolled_reference_solves_and_differentiates_the_same_on_either_transform(monkeypatch):
    """The FISTA reference (survey.solvers.cs) on the matrix products and on the convolutions (MAX_SIDE 0 forces
    them): the same solution and the same input gradient through the unroll, to float64 rounding."""
    import survey.solvers.wavelet_matrix as wavelet_matrix
    from survey.physics import make_physics
    from survey.solvers import make_reference

    physics = make_physics("mri", size=16, ratio=0.4, mask="gaussian-lines", seed=0)
    reference = make_reference(physics, iterations=30, unrolled=True)
    g = torch.Generator().manual_seed(3)
    y = physics.A(torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=g)).detach().requires_grad_(True)
    w = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=g)

    def solve_and_gradient():
        z = reference(y, physics)
        (grad,) = torch.autograd.grad((z * w).sum(), y)
        return z.detach(), grad

    fast = solve_and_gradient()
    monkeypatch.setattr(wavelet_matrix, "MAX_SIDE", 0)
    slow = solve_and_gradient()
    assert torch.allclose(fast[0], slow[0], atol=1e-12, rtol=0)
    assert torch.allclose(fast[1], slow[1], atol=1e-12, rtol=0)
    assert fast[0].abs().max() > 0.1 and fast[1].abs().max() > 1e-3   # not trivially zero
