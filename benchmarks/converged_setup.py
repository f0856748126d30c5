"""The set-up shared by benchmarks/converged_agreement.py and tests/test_converged.py: the five operators at
a small size and smooth blob images (piecewise-smooth, like the slices the reference is tuned on)."""

from __future__ import annotations

import torch

from survey.physics import make_physics

OPERATORS = {
    "mri": dict(kind="mri", ratio=0.4),
    "pmri": dict(kind="pmri", ratio=0.4, coils=4),
    "radon": dict(kind="radon", views=12),
    "limited-angle": dict(kind="radon", views=12, angular_range=150),
    "denoise": dict(kind="denoise"),
}


def operator(name: str, size: int = 16):
    """The operator `name` of OPERATORS at `size` x `size`, float64."""
    params = dict(OPERATORS[name])
    return make_physics(params.pop("kind"), size=size, **params).to(torch.float64)


def blobs(count: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    """`count` images (count, 1, size, size) of three smooth blobs each, scaled to a maximum of 1, float64."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    scale = torch.tensor([1.0, 1.0, 0.4, 0.8], dtype=torch.float64)
    shift = torch.tensor([-0.5, -0.5, 0.2, 0.2], dtype=torch.float64)
    out = []
    for _ in range(count):
        img = torch.zeros(size, size, dtype=torch.float64)
        for _ in range(3):
            cx, cy, radius, value = torch.rand(4, generator=g, dtype=torch.float64) * scale + shift
            img = img + value * torch.sigmoid((radius - ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()) * 12)
        out.append(img / img.max())
    return torch.stack(out)[:, None]
