"""How many separate failure regions do the particles that reached the failure set occupy?

In d dimensions the particles of one region differ mostly in the d - k directions the score ignores, so
plain distances cannot see the regions. The directions that matter stand out in the particles' covariance:
eigenvalues of the centred sample covariance above the Marchenko-Pastur edge (1 + sqrt(d / n))^2 of
N(0, I) noise (times a margin). Along each such direction the particles are split in two by the best 1-D
two-means split, kept when the halves are well separated (Ashman's D >= 3, at least 2 particles each);
the regions are the occupied combinations of halves. One region when no direction stands out.
"""

from __future__ import annotations

import math

import torch

#: How far above the noise edge an eigenvalue must be to count as a direction the score cares about.
EDGE_MARGIN = 1.5
#: Ashman's D at and above which the two halves of a direction are separate regions.
SEPARATION = 3.0
MAX_DIRECTIONS = 3


def _split(values: torch.Tensor) -> torch.Tensor | None:
    """The best two-means split of 1-D values as a bool mask (True: upper half), or None if not separated."""
    v, order = values.sort()
    n = v.numel()
    if n < 4:
        return None
    csum, csq = v.cumsum(0), (v * v).cumsum(0)
    k = torch.arange(1, n, dtype=v.dtype)
    left_mean, right_mean = csum[:-1] / k, (csum[-1] - csum[:-1]) / (n - k)
    left_var = (csq[:-1] / k - left_mean**2).clamp(min=0)
    right_var = ((csq[-1] - csq[:-1]) / (n - k) - right_mean**2).clamp(min=0)
    within = k * left_var + (n - k) * right_var
    within[:1] = math.inf   # at least 2 particles per half
    within[-1:] = math.inf
    j = int(within.argmin())
    d = math.sqrt(2.0) * abs(float(right_mean[j] - left_mean[j])) / math.sqrt(
        float(left_var[j] + right_var[j]) + 1e-300)
    if d < SEPARATION:
        return None
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[j + 1:]] = True
    return mask


def count_modes(z: torch.Tensor) -> int | None:
    """Separate regions among the latents z (n, d) (module docstring); None with fewer than 8 particles."""
    n = z.shape[0]
    if n < 8:
        return None
    x = z.detach().to("cpu", torch.float64)
    x = x - x.mean(dim=0)
    eig, vec = torch.linalg.eigh(x @ x.T)   # the n x n Gram matrix: cheap for d >> n
    eig, vec = eig.flip(0)[:MAX_DIRECTIONS].clamp(min=0), vec.flip(1)[:, :MAX_DIRECTIONS]
    edge = (1.0 + math.sqrt(z.shape[1] / n)) ** 2 * EDGE_MARGIN
    keep = eig / n > edge
    directions = (x.T @ vec[:, keep] / eig[keep].sqrt().clamp(min=1e-300)).T   # unit principal directions
    labels = torch.zeros(n, dtype=torch.int64)
    for i, u in enumerate(directions):
        mask = _split(x @ u)
        if mask is not None:
            labels += mask.to(torch.int64) << i
    return int(sum(1 for c in torch.bincount(labels) if c >= 2))


__all__ = ["EDGE_MARGIN", "SEPARATION", "count_modes"]
