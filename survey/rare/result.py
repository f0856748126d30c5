"""The result every rare-event estimator returns, and the interval helpers they share."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from scipy import stats

#: score(z) -> S(z): latent batch (N, d) -> scores (N,); one call = N network evaluations.
Score = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RareResult:
    """An estimate of p = P(S(z) >= delta), z ~ N(0, I_d), with a two-sided interval.

    p: the point estimate (None when only a certified bound was reached); ci_low, ci_high: the
    interval at `confidence` (ci_high = certified_below under certification); log10_p: log10(p)
    (None when p is None or 0); calls: score evaluations (= network evaluations, including the
    forward passes of gradient evaluations); grad_calls: how many of those also took a gradient
    (each costs about two to three forward passes); levels: splitting levels passed (None for
    others); ess: effective sample size of the importance weights on the failure set (None for
    others); certified_below: "P < certified_below at confidence 1 - alpha" when the threshold was
    not reached within the budget (None otherwise); info: method-specific details.
    """

    method: str
    p: float | None
    ci_low: float
    ci_high: float
    confidence: float
    log10_p: float | None
    calls: int
    levels: int | None = None
    ess: float | None = None
    certified_below: float | None = None
    grad_calls: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def covers(self, p: float) -> bool:
        """True when the interval holds p."""
        return self.ci_low <= p <= self.ci_high

    def as_row(self) -> dict[str, Any]:
        """Flat columns for a results table (info is left out)."""
        row = asdict(self)
        row.pop("info")
        return row


def log10_or_none(p: float | None) -> float | None:
    return math.log10(p) if p is not None and p > 0 else None


def lognormal_interval(p: float, rel_var: float, confidence: float) -> tuple[float, float]:
    """p * exp(-+ z sqrt(rel_var)): the delta-method interval on log p (rel_var = Var(p_hat) / p^2)."""
    if p <= 0:
        return 0.0, 0.0
    half = stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(max(rel_var, 0.0))
    return p * math.exp(-half), p * math.exp(half)


def clopper_pearson(hits: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact binomial interval for hits successes in n trials."""
    alpha = 1.0 - confidence
    low = 0.0 if hits == 0 else float(stats.beta.ppf(alpha / 2, hits, n - hits + 1))
    high = 1.0 if hits == n else float(stats.beta.ppf(1 - alpha / 2, hits + 1, n - hits))
    return low, high


def check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def scores_of(score: Score, z: torch.Tensor) -> torch.Tensor:
    """score(z) as a 1-D float64 tensor of length N, checked."""
    with torch.no_grad():
        s = score(z)
    s = torch.as_tensor(s).reshape(-1)
    if s.numel() != z.shape[0]:
        raise ValueError(f"score returned {s.numel()} values for {z.shape[0]} latents")
    return s.detach().to(torch.float64)


__all__ = ["RareResult", "Score", "check_confidence", "clopper_pearson", "log10_or_none",
           "lognormal_interval", "scores_of"]
