"""Shared pieces of the zoo networks: complex <-> channels and the network input from H(y)."""

from __future__ import annotations

import torch


def complex_to_channels(z: torch.Tensor) -> torch.Tensor:
    """(B, 1, n, n) complex -> (B, 2, n, n) real (real, imaginary)."""
    return torch.cat([z.real, z.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, n, n) real -> (B, 1, n, n) complex."""
    return torch.complex(x[:, :1], x[:, 1:2])


def real_image(z: torch.Tensor) -> torch.Tensor:
    """Real part of a possibly complex image."""
    return z.real if torch.is_complex(z) else z


def magnitude(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """|z| with eps inside the square root so gradients stay finite at 0 (|z| has none there)."""
    if not torch.is_complex(z):
        return z
    return torch.sqrt(z.real ** 2 + z.imag ** 2 + eps)
