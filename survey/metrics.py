"""Batched image-quality metrics: one number per batch element, on the inputs' device and dtype.

Every function takes images shaped (B, C, H, W) (networks return (B, 1, n, n)) and returns a
tensor (B,). Complex images are compared by magnitude. `data_range` is the intensity span of the
ground truth (1.0 for the project's images in [0, 1]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: SSIM constants of Wang et al. 2004 (and scikit-image).
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
#: Truncation in standard deviations; gives the 11-tap window of Wang et al. with sigma 1.5.
SSIM_TRUNCATE = 3.5


def _real(x: torch.Tensor) -> torch.Tensor:
    return x.abs() if torch.is_complex(x) else x


def _check_pair(x_hat: torch.Tensor, x: torch.Tensor, name: str) -> None:
    if x_hat.shape != x.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    if x.ndim < 2:
        raise ValueError(f"{name}: expected a batch (B, ...), got shape {tuple(x.shape)}")


def norms(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each batch element: (B, ...) -> (B,) real."""
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)


def rel_norm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i|| / ||b_i|| for each batch element i: (B, ...), (B, ...) -> (B,)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"rel_norm: batch sizes differ, {a.shape[0]} vs {b.shape[0]}")
    return norms(a) / norms(b)


def rel_error(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Relative error ||x_hat_i - x_i|| / ||x_i|| per batch element: -> (B,)."""
    _check_pair(x_hat, x, "rel_error")
    return rel_norm(x_hat - x, x)


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error per batch element (of magnitudes for complex inputs): -> (B,)."""
    _check_pair(x_hat, x, "mse")
    diff = _real(x_hat) - _real(x)
    return diff.reshape(diff.shape[0], -1).square().mean(dim=1)


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per batch element, 10 log10(data_range^2 / MSE): -> (B,).

    Identical images give +inf.
    """
    if data_range <= 0:
        raise ValueError(f"psnr: data_range must be positive, got {data_range}")
    err = mse(x_hat, x)
    return 10.0 * torch.log10(data_range ** 2 / err)


def _gaussian_window(sigma: float, truncate: float, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, radius int(truncate * sigma + 0.5) as in scipy.ndimage."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def _blur_valid(stack: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of every channel of (N, C, H, W), keeping only fully covered
    pixels: -> (N, C, H - k + 1, W - k + 1) for k taps.

    All N * C planes go on the channel axis of one depthwise convolution per direction (groups =
    planes); PyTorch's CPU path for a single-channel conv2d over a batch is several times slower.
    """
    n, c, height, width = stack.shape
    k, planes = w.numel(), n * c
    x = stack.reshape(1, planes, height, width)
    x = F.conv2d(x, w.view(1, 1, k, 1).expand(planes, 1, k, 1).contiguous(), groups=planes)
    x = F.conv2d(x, w.view(1, 1, 1, k).expand(planes, 1, 1, k).contiguous(), groups=planes)
    return x.reshape(n, c, height - k + 1, width - k + 1)


def ssim(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity per batch element (Gaussian window 11, sigma 1.5): -> (B,).

    Matches `skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range)`: skimage averages the SSIM map after
    cropping a 5-pixel border, which is exactly the region where the window needs no padding,
    so a 'valid' convolution gives the same number. Channels are averaged. H, W >= 11.
    """
    _check_pair(x_hat, x, "ssim")
    if x.ndim != 4:
        raise ValueError(f"ssim: expected images (B, C, H, W), got shape {tuple(x.shape)}")
    if data_range <= 0:
        raise ValueError(f"ssim: data_range must be positive, got {data_range}")
    a, b = _real(x_hat), _real(x)
    batch, channels, height, width = a.shape
    w = _gaussian_window(SSIM_SIGMA, SSIM_TRUNCATE, a.dtype, a.device)
    if min(height, width) < w.numel():
        raise ValueError(f"ssim: images must be at least {w.numel()} x {w.numel()}, got {height} x {width}")
    # The five local moments stacked on the channel axis: one filter call for all of them.
    moments = _blur_valid(torch.cat([a, b, a * a, b * b, a * b], dim=1), w)
    mu_a, mu_b, aa, bb, ab = moments.unflatten(1, (5, channels)).unbind(dim=1)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    # 2 mu_a mu_b + c1, 2 cov + c2; mu_a^2 + mu_b^2 + c1, var_a + var_b + c2
    num = (2 * mu_ab + c1) * (2 * (ab - mu_ab) + c2)
    den = (mu_aa + mu_bb + c1) * ((aa - mu_aa) + (bb - mu_bb) + c2)
    smap = num / den
    return smap.reshape(batch, -1).mean(dim=1)


__all__ = ["norms", "rel_norm", "rel_error", "mse", "psnr", "ssim"]
