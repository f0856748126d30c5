"""Adaptive multilevel splitting with a preconditioned Crank-Nicolson kernel (fixed proportion).

For p = P(S(z) >= delta), z ~ N(0, I_d) (Cerou, Del Moral, Furon and Guyader, Stat. Comput. 2012;
Webb et al., ICLR 2019, for classifiers): N particles drawn from N(0, I); at each level the
top fraction p0 survives (level L_j = the score just below them), the survivors are copied back to
N (each survivor floor(N / n_j) times, the rest without replacement) and every particle takes T
pCN steps constrained to S > L_j,

    z' = (z + s w) / sqrt(1 + s^2),  w ~ N(0, I),  accepted iff S(z') > L_j,

a kernel that leaves N(0, I) restricted to {S > L_j} invariant; the step s adapts to an acceptance
rate near `target_accept` (all particles move as one batch per score call). Once at least a
fraction p0 of the particles has S >= delta, p_hat = prod_j (n_j / N) * (#{S >= delta} / N).
Its relative variance is, as for independent levels (the same paper's CLT),

    Var(p_hat) / p^2 ~ sum_j (1 - p_j) / (p_j N) + (1 - r) / (r N),

and the interval is p_hat exp(-+ z sqrt(that)) (log scale). The MCMC's imperfect mixing is not in
that formula: take T large enough (the tests check coverage against exact answers).

Certification: with `max_levels` (a budget) or `stop_below` (a target p_c), when delta is not
reached the last level L_k bounds the event, P(S >= delta) <= P(S > L_k), and the one-sided upper
confidence bound of P(S > L_k) is returned as `certified_below` ("P < p_c at confidence 1 - alpha").
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from survey.rare.result import (RareResult, Score, check_confidence, log10_or_none, lognormal_interval,
                                scores_of)


def _resample(count: int, survivors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of `count` copies of `survivors`: floor(count / n) each, the remainder without replacement."""
    n = survivors.numel()
    base = survivors.repeat(count // n)
    extra = count - base.numel()
    if extra:
        pick = torch.randperm(n, generator=generator, device=generator.device)[:extra].to(survivors.device)
        base = torch.cat([base, survivors[pick]])
    return base


def splitting(score: Score, dim: int, delta: float, *, generator: torch.Generator, n_particles: int = 1000,
              p0: float = 0.2, mcmc_steps: int = 10, max_levels: int = 200, stop_below: float | None = None,
              confidence: float = 0.95, target_accept: float = 0.25, step: float = 1.0,
              dtype: torch.dtype = torch.float64) -> RareResult:
    """Estimate P(S(z) >= delta) by adaptive multilevel splitting (see the module docstring).

    n_particles: N; p0: the surviving fraction per level; mcmc_steps: T pCN steps per level;
    max_levels: the level budget; stop_below: stop as soon as P(S > current level) is certified
    below this value; step: the initial pCN step s. Calls: N * (1 + T * levels).
    """
    confidence = check_confidence(confidence)
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"p0 must be in (0, 1), got {p0!r}")
    if n_particles < 2 or mcmc_steps < 1 or max_levels < 0:
        raise ValueError("need n_particles >= 2, mcmc_steps >= 1, max_levels >= 0")
    device = generator.device
    n = int(n_particles)
    keep = max(1, min(n - 1, math.ceil(p0 * n)))
    z = torch.randn((n, dim), generator=generator, dtype=dtype, device=device)
    s = scores_of(score, z).to(device)
    calls = n
    fractions: list[float] = []
    levels: list[float] = []
    accept_rates: list[float] = []
    z_upper = stats.norm.ppf(confidence)  # one-sided, for certification

    def rel_var(extra: float | None = None) -> float:
        v = sum((1 - q) / (q * n) for q in fractions)
        return v + ((1 - extra) / (extra * n) if extra is not None else 0.0)

    def certified(reason: str) -> RareResult:
        prod = math.prod(fractions) if fractions else 1.0
        bound = min(1.0, prod * math.exp(z_upper * math.sqrt(rel_var())))
        return RareResult("splitting", None, 0.0, bound, confidence, None, calls, levels=len(fractions),
                          certified_below=bound, info={"reason": reason, "level_values": levels,
                                                       "fractions": fractions, "accept": accept_rates,
                                                       "step": step, "last_level": levels[-1] if levels else None})

    while True:
        hits = int((s >= delta).sum())
        if hits >= keep:
            r = hits / n
            p = math.prod(fractions) * r
            low, high = lognormal_interval(p, rel_var(r), confidence)
            return RareResult("splitting", p, low, high, confidence, log10_or_none(p), calls, levels=len(fractions),
                              info={"level_values": levels, "fractions": fractions, "final_fraction": r,
                                    "accept": accept_rates, "step": step, "rel_var": rel_var(r)})
        if stop_below is not None and fractions:
            if math.prod(fractions) * math.exp(z_upper * math.sqrt(rel_var())) < stop_below:
                return certified("stop_below")
        if len(fractions) >= max_levels:
            return certified("max_levels")
        ordered = torch.sort(s, descending=True).values
        level = float(ordered[keep])
        alive = (s > level).nonzero().squeeze(1)
        if alive.numel() == 0:  # the top of the score is flat: no level above it can be found
            return certified("flat")
        fractions.append(alive.numel() / n)
        levels.append(level)
        index = _resample(n, alive, generator)
        z, s = z[index], s[index]
        accepted = 0
        for _ in range(mcmc_steps):
            w = torch.randn(z.shape, generator=generator, dtype=dtype, device=device)
            proposal = (z + step * w) / math.sqrt(1.0 + step * step)
            s_new = scores_of(score, proposal).to(device)
            calls += n
            ok = s_new > level
            z = torch.where(ok[:, None], proposal, z)
            s = torch.where(ok, s_new, s)
            rate = float(ok.to(torch.float64).mean())
            accepted += int(ok.sum())
            step = min(1e3, max(1e-4, step * math.exp(rate - target_accept)))
        accept_rates.append(accepted / (n * mcmc_steps))


__all__ = ["splitting"]
