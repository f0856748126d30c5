"""Metrics agree with scikit-image and with their definitions, per batch element."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from survey.metrics import norms, psnr, rel_error, rel_norm, ssim


def ssim_before(x_hat, x, data_range=1.0):
    """The reference oracle: `survey.metrics.ssim` as it was before the depthwise rewrite (a batch of
    single-channel convolutions), kept verbatim but for the argument checks."""
    import torch.nn.functional as F

    a = x_hat.abs() if torch.is_complex(x_hat) else x_hat
    b = x.abs() if torch.is_complex(x) else x
    batch, channels, height, width = a.shape
    radius = int(3.5 * 1.5 + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=a.dtype, device=a.device)
    w = torch.exp(-0.5 * (t / 1.5) ** 2)
    w = w / w.sum()
    k = w.numel()
    a = a.reshape(batch * channels, 1, height, width)
    b = b.reshape(batch * channels, 1, height, width)
    moments = torch.cat([a, b, a * a, b * b, a * b], dim=0)
    moments = F.conv2d(F.conv2d(moments, w.view(1, 1, k, 1)), w.view(1, 1, 1, k))
    mu_a, mu_b, aa, bb, ab = moments.chunk(5, dim=0)
    var_a = aa - mu_a ** 2
    var_b = bb - mu_b ** 2
    cov = ab - mu_a * mu_b
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return (num / den).reshape(batch, -1).mean(dim=1)


def _pair(batch=3, n=32, noise=0.1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, n, n, generator=g, dtype=dtype)
    # Smooth-ish ground truth so SSIM is not trivially ~0.
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    scales = torch.linspace(0.2, 2.0, batch, dtype=dtype).view(-1, 1, 1, 1)
    x_hat = x + noise * scales * torch.randn(x.shape, generator=g, dtype=dtype)
    return x_hat, x


@pytest.mark.parametrize("n", [16, 33])
def test_ssim_matches_skimage(n):
    x_hat, x = _pair(n=n)
    ours = ssim(x_hat, x, data_range=1.0)
    for i in range(x.shape[0]):
        ref = structural_similarity(x_hat[i, 0].numpy(), x[i, 0].numpy(), gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, data_range=1.0)
        assert abs(float(ours[i]) - ref) < 1e-3, (i, float(ours[i]), ref)
    # Different noise levels give different values: the metric is per element, not pooled.
    assert ours[0] > ours[1] > ours[2]


def test_ssim_float32_and_data_range():
    x_hat, x = _pair(n=24)
    ours = ssim(x_hat.float() * 255, x.float() * 255, data_range=255.0)
    assert ours.dtype == torch.float32 and ours.shape == (3,)
    for i in range(3):
        ref = structural_similarity(x_hat[i, 0].numpy() * 255, x[i, 0].numpy() * 255, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, data_range=255.0)
        assert abs(float(ours[i]) - ref) < 1e-3


def test_ssim_identity_and_errors():
    _, x = _pair(n=16)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=x.dtype))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(x, x[:2])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_ssim_equals_the_previous_implementation(dtype, tol):
    # Ball-like batch: 64 reconstructions of 64 x 64 images at noise levels from 0.02 to 0.4.
    x_hat, x = _pair(batch=64, n=64, noise=0.2, seed=3, dtype=dtype)
    ours, before = ssim(x_hat, x), ssim_before(x_hat, x)
    assert ours.dtype == dtype and ours.shape == (64,)
    assert float((ours - before).abs().max()) < tol
    # Several channels, a rectangle, complex inputs and another data range.
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, 2, 20, 31, generator=g, dtype=dtype)
    b = torch.complex(a + 0.3 * torch.randn(a.shape, generator=g, dtype=dtype),
                      0.1 * torch.randn(a.shape, generator=g, dtype=dtype))
    assert float((ssim(b, a, data_range=7.0) - ssim_before(b, a, data_range=7.0)).abs().max()) < tol


def test_psnr_matches_skimage_and_definition():
    x_hat, x = _pair()
    ours = psnr(x_hat, x)
    for i in range(3):
        ref = peak_signal_noise_ratio(x[i, 0].numpy(), x_hat[i, 0].numpy(), data_range=1.0)
        assert abs(float(ours[i]) - ref) < 1e-9
    # A constant error c gives exactly -20 log10(c).
    assert math.isclose(float(psnr(x + 0.1, x)[0]), 20.0, rel_tol=1e-9)
    assert torch.isinf(psnr(x, x)).all()
    with pytest.raises(ValueError, match="data_range"):
        psnr(x_hat, x, data_range=0)


def test_norms_per_element_and_complex():
    a = torch.zeros(2, 1, 4, 4, dtype=torch.complex64)
    a[0, 0, 0, 0] = 3 + 4j
    a[1, 0, 1, 1] = 1
    assert torch.allclose(norms(a), torch.tensor([5.0, 1.0]))
    b = torch.ones(2, 1, 4, 4)
    assert torch.allclose(rel_norm(b * 2, b), torch.tensor([2.0, 2.0]))
    assert torch.allclose(rel_error(b * 1.5, b), torch.tensor([0.5, 0.5]))
    np.testing.assert_allclose(psnr(a.abs() * 0 + 1, a.abs() * 0).numpy(), [0.0, 0.0])
