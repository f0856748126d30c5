"""Random ellipses: the kind of images the paper's Ell 50 FBPConvNet was trained on.

Each image is a sum of 5-15 ellipses (by default) of random intensity, semi-axes, centre and
angle, all inside the unit disc (the CT field of view), divided by its maximum so it spans [0, 1].
Image i is drawn from its own generator seeded with (seed, i), so it is the same at any count,
any split size and any resolution (geometry is in normalised coordinates [-1, 1]).

Splits are disjoint index ranges: train i = 0.., val i = 800000.., test i = 900000..;
ids are 'ellipses/<i:06d>'.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from survey.data.base import ImageSet

SPLIT_START = {"train": 0, "val": 800_000, "test": 900_000}
SPLIT_CAPACITY = {"train": 800_000, "val": 100_000, "test": 100_000}
_CHUNK = 256  # images rasterised at once; bounds memory to a few MB per slot


def rasterise_ellipses(intensity: torch.Tensor, semi_axes: torch.Tensor, centres: torch.Tensor,
                       angles: torch.Tensor, size: int, supersample: int = 1) -> torch.Tensor:
    """Sum of filled ellipses on the square [-1, 1]^2, y pointing up (row 0 is y = +1).

    intensity (K, E); semi_axes, centres (K, E, 2) as (a, b) and (x0, y0); angles (K, E) in
    radians, counter-clockwise. Returns float32 (K, 1, size, size). With supersample s > 1 each
    pixel is the mean over an s x s grid of sub-pixel samples (antialiased edges).
    """
    n = size * supersample
    coords = (torch.arange(n, dtype=torch.float32) * 2 + 1) / n - 1
    x = coords[None, None, :]            # columns: x from -1 to 1
    y = coords.flip(0)[None, :, None]    # rows: y from 1 down to -1
    k_total, e_total = intensity.shape
    # inside <=> P dx^2 + Q dy^2 + R dx dy <= 1 (the rotated ellipse as a quadratic form), which
    # needs only four full-size operations per ellipse
    a2, b2 = semi_axes[..., 0] ** 2, semi_axes[..., 1] ** 2
    c, s = torch.cos(angles), torch.sin(angles)
    qp, qq, qr = c * c / a2 + s * s / b2, s * s / a2 + c * c / b2, 2 * c * s * (1 / a2 - 1 / b2)
    x0, y0 = centres[..., 0], centres[..., 1]
    # process images with similar numbers of ellipses together so zero-intensity slots are skipped
    order = torch.argsort((intensity != 0).sum(dim=1), descending=True, stable=True)
    out = torch.empty(k_total, 1, size, size, dtype=torch.float32)
    for start in range(0, k_total, _CHUNK):
        rows = order[start:start + _CHUNK]
        canvas = torch.zeros(rows.numel(), n, n, dtype=torch.float32)
        for e in range(e_total):
            active = (intensity[rows, e] != 0).nonzero()[:, 0]
            if active.numel() == 0:
                continue
            r = rows[active]
            dx = x - x0[r, e, None, None]   # (k, 1, n)
            dy = y - y0[r, e, None, None]   # (k, n, 1)
            q = qp[r, e, None, None] * dx * dx + qq[r, e, None, None] * dy * dy
            q = torch.baddbmm(q, qr[r, e, None, None] * dy, dx).le_(1.0).mul_(intensity[r, e, None, None])
            if active.numel() == rows.numel():
                canvas += q
            else:
                canvas.index_add_(0, active, q)
        if supersample > 1:
            canvas = F.avg_pool2d(canvas[:, None], supersample)[:, 0]
        out[rows, 0] = canvas
    return out


def draw_parameters(seed: int, index: int, min_ellipses: int, max_ellipses: int,
                    max_semi_axis: float) -> np.ndarray:
    """(max_ellipses, 6) rows (intensity, a, b, x0, y0, angle) of image `index`; unused slots have
    intensity 0. The same numbers are drawn whatever the count, so slot order is stable."""
    rng = np.random.default_rng([seed, index])
    count = int(rng.integers(min_ellipses, max_ellipses + 1))
    intensity = rng.uniform(0.1, 1.0, max_ellipses)
    axes = rng.uniform(0.03, max_semi_axis, (max_ellipses, 2))
    # centre uniform in the disc that keeps the whole ellipse inside radius 0.95
    reach = 0.95 - axes.max(axis=1)
    radius = reach * np.sqrt(rng.uniform(0.0, 1.0, max_ellipses))
    phi = rng.uniform(0.0, 2 * np.pi, max_ellipses)
    angle = rng.uniform(0.0, np.pi, max_ellipses)
    intensity[count:] = 0.0
    return np.column_stack([intensity, axes, radius * np.cos(phi), radius * np.sin(phi), angle])


def ellipse_images(indices, size: int, seed: int = 0, min_ellipses: int = 5, max_ellipses: int = 15,
                   max_semi_axis: float = 0.45) -> torch.Tensor:
    """Images (K, 1, size, size) float32 in [0, 1] for the given global indices."""
    if not 1 <= min_ellipses <= max_ellipses:
        raise ValueError(f"need 1 <= min_ellipses <= max_ellipses, got {min_ellipses}, {max_ellipses}")
    if not 0.03 < max_semi_axis <= 0.9:
        raise ValueError(f"max_semi_axis must be in (0.03, 0.9], got {max_semi_axis}")
    indices = list(indices)
    if not indices:
        return torch.zeros(0, 1, size, size)
    p = torch.from_numpy(np.stack([draw_parameters(seed, i, min_ellipses, max_ellipses, max_semi_axis)
                                   for i in indices])).to(torch.float32)
    images = rasterise_ellipses(p[..., 0], p[..., 1:3], p[..., 3:5], p[..., 5], size)
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    # an image so small that every ellipse missed every pixel centre stays all zero (rare at n >= 16)
    return (images / peak.clamp_min(1e-12)).clamp_(0.0, 1.0)


def load(split: str = "test", size: int = 64, *, seed: int = 0, n_train: int = 2000, n_val: int = 100,
         n_test: int = 100, min_ellipses: int = 5, max_ellipses: int = 15,
         max_semi_axis: float = 0.45) -> ImageSet:
    """The `split` images of the ellipses dataset at size x size (see the module docstring)."""
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if split not in counts:
        raise ValueError(f"ellipses: unknown split {split!r}; choose one of {list(counts)}")
    count = counts[split]
    if not 0 <= count <= SPLIT_CAPACITY[split]:
        raise ValueError(f"ellipses: n_{split} must be in [0, {SPLIT_CAPACITY[split]}], got {count}")
    indices = range(SPLIT_START[split], SPLIT_START[split] + count)
    images = ellipse_images(indices, size, seed, min_ellipses, max_ellipses, max_semi_axis)
    source = (f"synthetic random ellipses (seed={seed}, {min_ellipses}-{max_ellipses} ellipses per image, "
              f"semi-axes 0.03-{max_semi_axis}), generated in-process")
    return ImageSet("ellipses", split, [f"ellipses/{i:06d}" for i in indices], images, source)
