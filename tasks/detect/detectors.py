"""The detectors and the image-level scores every detect experiment shares."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from survey.metrics import norms
from survey.numerics import measured_mask, standard_gaussian

#: Detectors: the companions' methods, and the model-free control.
METHODS = ("inn", "mcdropout", "probout", "inputnoise")


class InputNoise(nn.Module):
    """Model-free control detector: u = per-pixel std of f(y + s e) over T passes, e Gaussian on the
    measured entries, s = sigma * RMS(y)."""

    method = "inputnoise"

    def __init__(self, net, sigma: float = 0.02, passes: int = 16):
        super().__init__()
        self.net, self.sigma, self.passes = net, float(sigma), int(passes)

    def uncertainty(self, y: torch.Tensor, physics, generator=None, passes: int | None = None) -> torch.Tensor:
        t = int(passes or self.passes)
        batch = y.shape[0]
        rms = norms(y) / math.sqrt(y[0].numel())
        e = standard_gaussian((t * batch, *y.shape[1:]), y, generator) * measured_mask(physics, y)
        stacked = y.repeat(t, *([1] * (y.ndim - 1))) + self.sigma * rms.repeat(t).view(-1, *([1] * (y.ndim - 1))) * e
        out = self.net(stacked, physics)
        out = out.real if torch.is_complex(out) else out
        return out.view(t, batch, *out.shape[1:]).std(dim=0)


class WithNoise(nn.Module):
    """f(u + e): the network at a fixed measurement-noise draw e per image, for searches that build
    their inputs from the noiseless A x (worst_case stacks its samples image-major)."""

    def __init__(self, net, noise: torch.Tensor):
        super().__init__()
        self.net, self.noise = net, noise
        self.eval()  # worst_case restores a module's training flag, which would reach the wrapped net

    def forward(self, u: torch.Tensor, physics) -> torch.Tensor:
        reps = u.shape[0] // self.noise.shape[0]
        return self.net(u + self.noise.repeat_interleave(reps, dim=0), physics)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over each sample's pixels, (N, ...) x2 -> (N,); 0 where either is constant."""
    from survey.tasks.insertion import masked_correlation

    return masked_correlation(a, b, torch.ones_like(a, dtype=torch.bool))


def patch_max(u: torch.Tensor, window: int) -> torch.Tensor:
    """Largest mean of u over window x window patches (stride 1): (N, 1, n, n) -> (N,)."""
    w = min(window, u.shape[-1], u.shape[-2])
    return F.avg_pool2d(u, w, stride=1).flatten(1).amax(1)


__all__ = ["InputNoise", "METHODS", "WithNoise", "patch_max", "pearson"]
