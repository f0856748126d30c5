"""Center smoothing (Kumar and Goldstein, NeurIPS 2021) of a reconstruction: a certified output radius.

The smoothed reconstruction at x is the centre of the smallest ball holding half the law of f(y(x + d)),
d ~ N(0, sigma^2 I) (image domain; measurement domain: noise on the measured entries). It is approximated
as in the paper: among n_center samples z_i the one with the least median distance to the others (a
beta = 2 approximation of that centre: any sample inside the smallest half-mass ball has half the samples
within twice its radius). Certificate: with p = Phi(Phi^-1(1/2 + margin) + eps / sigma) and R an upper
confidence bound (level 1 - alpha, binomial order statistic of n_cert fresh samples) on the p-quantile of
||f(y(x + d)) - centre||, every x' with ||x' - x|| <= eps has

    ||smoothed(x') - smoothed(x)|| <= (1 + beta) R,

because the ball B(centre, R) keeps probability > 1/2 under the shifted noise (the Gaussian shift bound
P_x'(S) >= Phi(Phi^-1(P_x(S)) - eps / sigma)), so it meets the half-mass ball at x' (radius <= beta R).
The confidence 1 - alpha is that of R given the centre; the centre's own approximation (the paper's beta = 2
with high probability over n_center samples) is taken as the definition of the smoothed function, as in
the paper. The smoothing itself costs accuracy: PSNR of the centre against the truth beside the network's
own.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from scipy.stats import binom, norm

BETA = 2.0


class Smoothed(NamedTuple):
    """One image: centre (the smoothed output), radius (certified output radius at input radius eps; None
    when it cannot be certified: p too close to 1 for the samples), R and
    its two-sided band [quantile_low, quantile_high] for the p-quantile, p, samples used, and why not."""

    centre: torch.Tensor
    radius: float | None
    quantile: float | None
    quantile_low: float | None
    quantile_high: float | None
    p: float
    samples: int
    reason: str


def order_index(n: int, p: float, alpha: float, upper: bool = True) -> int | None:
    """1-based k with P(the p-quantile <= X_(k)) >= 1 - alpha (upper) or P(X_(k) <= the p-quantile) >=
    1 - alpha (lower), from the binomial law of how many of n samples fall below the quantile; None if
    n is too small."""
    if upper:
        k = int(binom.ppf(1 - alpha, n, p)) + 1
        return k if k <= n else None
    k = int(binom.ppf(alpha, n, p))
    return k if k >= 1 else None


def center_smooth(f: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor, sigma: float, eps: float, *,
                  n_center: int = 64, n_cert: int = 512, alpha: float = 0.01, margin: float = 0.05,
                  batch: int = 64, generator: torch.Generator | None = None,
                  noise_mask: torch.Tensor | None = None) -> Smoothed:
    """Center smoothing of f (u -> output, batched) at one input u (1, ...), noise std `sigma` (absolute,
    per real coordinate), certified at input radius `eps` (absolute); see the module docstring. Confidence
    1 - alpha for the radius (the centre's own sampling is checked on the certification samples)."""
    def draws(count: int) -> torch.Tensor:
        outs = []
        for part in range(0, count, batch):
            k = min(batch, count - part)
            real = u.real.dtype if u.is_complex() else u.dtype
            where = generator.device if generator is not None else u.device
            noise = torch.randn((k, *u.shape[1:]), generator=generator, dtype=real, device=where)
            if u.is_complex():
                noise = torch.complex(noise, torch.randn(noise.shape, generator=generator, dtype=real, device=where))
            if noise_mask is not None:
                noise = noise * noise_mask.to(noise.device)
            with torch.no_grad():
                outs.append(f(u + sigma * noise.to(u.device)).reshape(k, -1))
        return torch.cat(outs)

    first = draws(n_center)
    dist = torch.cdist(first.double(), first.double())
    median = dist.median(dim=1).values
    j = int(median.argmin())
    centre = first[j]
    second = draws(n_cert)
    d = torch.linalg.vector_norm(second.double() - centre.double(), dim=1).sort().values
    p = float(norm.cdf(norm.ppf(0.5 + margin) + eps / sigma))
    samples = n_center + n_cert
    k_up = order_index(n_cert, p, alpha)
    k_hi = order_index(n_cert, p, alpha / 2)
    k_lo = order_index(n_cert, p, alpha / 2, upper=False)
    low = float(d[k_lo - 1]) if k_lo is not None else None
    high = float(d[k_hi - 1]) if k_hi is not None else None
    if k_up is None:
        return Smoothed(centre, None, None, low, high, p, samples,
                        f"{n_cert} samples cannot bound the {p:.6f}-quantile at confidence {1 - alpha:g}")
    quantile = float(d[k_up - 1])
    return Smoothed(centre, (1 + BETA) * quantile, quantile, low, high, p, samples, "")


def noise_for(eps: float, sigma: float) -> float:
    """p = Phi(Phi^-1(0.55) + eps / sigma): the quantile the certificate needs (for docs and checks)."""
    return float(norm.cdf(norm.ppf(0.55) + eps / sigma))


__all__ = ["BETA", "Smoothed", "center_smooth", "noise_for", "order_index"]
