"""Exact maxima of ||f(v0 + r) - f(v0)|| over a small ball for tiny ReLU networks, by enumerating their
activation patterns (no MILP): the answers the certified bounds are tested against (tests/test_certify.py)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import nn


class TinyMLP(nn.Module):
    """f(y) = seq(the first `dim` pixels of Re H(y)): a small ReLU network on a tiny input."""

    def __init__(self, seq: nn.Sequential, dim: int):
        super().__init__()
        self.seq, self.dim = seq, dim

    def forward(self, y, physics):
        h = physics.H(y)
        h = h.real if torch.is_complex(h) else h
        return self.seq(h.flatten(1)[:, :self.dim].to(self.seq[0].weight.dtype))


def mlp(widths, seed: int, bias: float = 0.5) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(a, b).double()
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=gen, dtype=torch.float64) / math.sqrt(a))
            lin.bias.copy_(bias * torch.randn(b, generator=gen, dtype=torch.float64))
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def change(seq: nn.Sequential, v0: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """||seq(v0 + r) - seq(v0)|| for a batch of r (K, d)."""
    with torch.no_grad():
        return torch.linalg.vector_norm(seq(v0 + r) - seq(v0[None]), dim=1)


def disk_maximum(seq: nn.Sequential, v0: torch.Tensor, rho: float) -> float:
    """Exact max over ||r|| <= rho (r in R^2) for a one-hidden-layer ReLU network: ||f(v0 + r) - f(v0)|| is
    convex on each linear region, so its maximum over region and disk sits at an extreme point of their
    intersection: a vertex of the line arrangement inside the disk, a line's crossing of the circle, or a
    point of a circle arc inside one region (maximised on each arc between consecutive crossings)."""
    w, b = seq[0].weight.detach().double(), seq[0].bias.detach().double()
    a, c = w, -(w @ v0 + b)                       # line j: a_j . r = c_j
    candidates = []
    i, j = torch.triu_indices(a.shape[0], a.shape[0], 1)
    det = a[i, 0] * a[j, 1] - a[i, 1] * a[j, 0]
    ok = det.abs() > 1e-12
    x = (c[i] * a[j, 1] - c[j] * a[i, 1]) / torch.where(ok, det, 1.0)
    y = (a[i, 0] * c[j] - a[j, 0] * c[i]) / torch.where(ok, det, 1.0)
    pts = torch.stack([x, y], 1)[ok]
    candidates.append(pts[torch.linalg.vector_norm(pts, dim=1) <= rho])
    norm2 = (a * a).sum(1)
    dist = c / norm2.sqrt()
    cross = dist.abs() < rho
    foot = (c / norm2)[:, None] * a
    perp = torch.stack([-a[:, 1], a[:, 0]], 1) / norm2.sqrt()[:, None]
    half = torch.sqrt((rho ** 2 - dist ** 2).clamp_min(0))[:, None]
    crossings = torch.cat([(foot + half * perp)[cross], (foot - half * perp)[cross]])
    candidates.append(crossings)
    angles = np.sort(np.mod(np.arctan2(crossings[:, 1].numpy(), crossings[:, 0].numpy()), 2 * np.pi))
    angles = np.concatenate([angles, [angles[0] + 2 * np.pi]]) if angles.size else np.array([0.0, 2 * np.pi])

    def on_circle(theta):
        theta = torch.as_tensor(np.atleast_1d(theta), dtype=torch.float64)
        return rho * torch.stack([torch.cos(theta), torch.sin(theta)], 1)

    best = float(change(seq, v0, torch.cat(candidates)).max()) if sum(len(t) for t in candidates) else 0.0
    for lo, hi in zip(angles[:-1], angles[1:]):
        if hi - lo < 1e-15:
            continue
        grid = np.linspace(lo, hi, 33)
        values = change(seq, v0, on_circle(grid)).numpy()
        k = int(values.argmax())
        found = minimize_scalar(lambda t: -float(change(seq, v0, on_circle(t))[0]), method="bounded",
                                bounds=(grid[max(k - 1, 0)], grid[min(k + 1, 32)]), options={"xatol": 1e-12})
        best = max(best, float(values.max()), -float(found.fun))
    return best


def segment_maximum(seq: nn.Sequential, v0: torch.Tensor, rho: float) -> float:
    """Exact max over |t| <= rho (a 1-D input) for a deep ReLU network: sweep t from -rho to rho through the
    activation patterns (each layer's pre-activations are affine in t within a pattern, so the next pattern
    change is the first root ahead); the change is convex on each piece, so its maximum is at a piece's end."""
    layers = [m for m in seq if isinstance(m, nn.Linear)]
    points = [-rho, rho]
    t = -rho
    while t < rho:
        slope, offset = torch.ones(1, dtype=torch.float64), v0.clone()   # value = slope t + offset (input)
        ahead = rho
        probe = t + 1e-12
        for k, lin in enumerate(layers):
            w, b = lin.weight.detach().double(), lin.bias.detach().double()
            slope, offset = w @ slope, w @ offset + b
            if k == len(layers) - 1:
                break
            z = slope * probe + offset
            roots = -offset / torch.where(slope.abs() > 0, slope, 1.0)
            roots = roots[(slope.abs() > 0) & (roots > probe)]
            if roots.numel():
                ahead = min(ahead, float(roots.min()))
            active = (z > 0).double()
            slope, offset = slope * active, offset * active
        points.append(ahead)
        t = ahead
    r = torch.tensor(points, dtype=torch.float64)[:, None]
    return float(change(seq, v0, r).max())
