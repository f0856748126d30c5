"""Isotropic total variation with forward differences, its gradient operator D and adjoint D^T.

D x = (x[i+1, j] - x[i, j], x[i, j+1] - x[i, j]) with zero difference on the last row / column
(Neumann boundary); ||D||^2 <= 8. TV(x) = sum_ij |(D x)_ij| (isotropic: l2 over the two
directions, l1 over pixels). FISTA needs a smooth term, so `smoothed_tv` replaces |g| by
sqrt(|g|^2 + eps^2) - eps, whose gradient D^T (D x / sqrt(|D x|^2 + eps^2)) is (8 / eps)-Lipschitz.
Units: eps is in image intensity units (images in [0, 1]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Upper bound on ||D||_2^2 for 2-D forward differences (4 per direction).
GRADIENT_NORM_SQUARED = 8.0


def gradient(x: torch.Tensor) -> torch.Tensor:
    """D x: (..., H, W) -> (..., 2, H, W), [vertical, horizontal] forward differences."""
    vertical = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    horizontal = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    return torch.stack([vertical, horizontal], dim=-3)


def gradient_adjoint(p: torch.Tensor) -> torch.Tensor:
    """D^T p: (..., 2, H, W) -> (..., H, W); equals minus the discrete divergence."""
    vertical, horizontal = p[..., 0, :-1, :], p[..., 1, :, :-1]
    return (F.pad(vertical, (0, 0, 1, 0)) - F.pad(vertical, (0, 0, 0, 1))
            + F.pad(horizontal, (1, 0)) - F.pad(horizontal, (0, 1)))


def _magnitude_squared(g: torch.Tensor) -> torch.Tensor:
    g = g.abs() if torch.is_complex(g) else g
    return (g * g).sum(dim=-3)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV of each image: (B, C, H, W) -> (B,), summed over channels and pixels."""
    return _magnitude_squared(gradient(x)).sqrt().flatten(1).sum(dim=1)


def smoothed_tv(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Smoothed TV sum sqrt(|D x|^2 + eps^2) - eps per image: (B, C, H, W) -> (B,); -> TV as eps -> 0."""
    if eps <= 0:
        raise ValueError(f"smoothed TV needs eps > 0, got eps={eps}")
    return ((_magnitude_squared(gradient(x)) + eps * eps).sqrt() - eps).flatten(1).sum(dim=1)


def smoothed_tv_grad(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Gradient of `smoothed_tv` with respect to x (same shape as x); Lipschitz constant 8 / eps."""
    if eps <= 0:
        raise ValueError(f"smoothed TV needs eps > 0, got eps={eps}")
    g = gradient(x)
    scale = (_magnitude_squared(g) + eps * eps).rsqrt()
    return gradient_adjoint(g * scale.unsqueeze(-3))


def smoothed_tv_hessian(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """Hessian of `smoothed_tv` at x applied to w: D^T [ D w / rho - g (g . D w) / rho^3 ], g = D x,
    rho = sqrt(|g|^2 + eps^2) per pixel (symmetric positive semi-definite; same shape as x)."""
    return smoothed_tv_hessian_at(x, eps)(w)


def smoothed_tv_hessian_at(x: torch.Tensor, eps: float):
    """w -> `smoothed_tv_hessian(x, w, eps)`, with D x and rho computed once (for many products at one x)."""
    if eps <= 0:
        raise ValueError(f"smoothed TV needs eps > 0, got eps={eps}")
    g = gradient(x)
    inv = (_magnitude_squared(g) + eps * eps).rsqrt().unsqueeze(-3)
    g_scaled = g * inv.pow(3)

    def apply(w: torch.Tensor) -> torch.Tensor:
        d = gradient(w)
        return gradient_adjoint(d * inv - g_scaled * (g * d).sum(dim=-3, keepdim=True))
    return apply
