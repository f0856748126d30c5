"""Naive Monte Carlo: the baseline and check of every rare-event estimator (exact Clopper-Pearson)."""

from __future__ import annotations

import torch

from survey.rare.result import RareResult, Score, check_confidence, clopper_pearson, log10_or_none, scores_of


def mc(score: Score, dim: int, delta: float, *, n: int, generator: torch.Generator, batch: int = 4096,
       confidence: float = 0.95, dtype: torch.dtype = torch.float64) -> RareResult:
    """P(S(z) >= delta) from n independent draws z ~ N(0, I_dim), scored `batch` at a time."""
    confidence = check_confidence(confidence)
    if n < 1 or batch < 1:
        raise ValueError("n and batch must be >= 1")
    device = generator.device
    hits = 0
    for start in range(0, n, batch):
        count = min(batch, n - start)
        z = torch.randn((count, dim), generator=generator, dtype=dtype, device=device)
        hits += int((scores_of(score, z) >= delta).sum())
    p = hits / n
    low, high = clopper_pearson(hits, n, confidence)
    return RareResult("mc", p, low, high, confidence, log10_or_none(p), calls=n, info={"hits": hits})


__all__ = ["mc"]
