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
