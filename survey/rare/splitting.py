"""Adaptive multilevel splitting with a pCN kernel (fixed proportion), several independent runs per estimate.

For p = P(S(z) >= delta), z ~ N(0, I_d) (Cerou, Del Moral, Furon and Guyader, Stat. Comput. 2012; Webb et
al., ICLR 2019): N particles drawn from N(0, I); at each level the top fraction p0 survives (level L_j =
the score just below them), the survivors are copied back to N (each floor(N / n_j) or ceil(N / n_j)
times) and every particle takes T pCN steps constrained to S > L_j (survey.rare.particles). Once at least
a fraction p0 has S >= delta, p_hat = prod_j (n_j / N) * (#{S >= delta} / N), with relative variance (the
same paper's CLT, exact only under perfect mixing)

    Var(p_hat) / p^2 ~ sum_j (1 - p_j) / (p_j N) + (1 - r) / (r N).

`runs` independent runs of N particles each advance as one batch (B = runs chains); survey.rare.runs
combines them: the mean of the runs' estimates, the spread between runs checked against the formula (a
failure mode that some runs lost makes them disagree), the mixing diagnostics per level, and when a check
fails an upper end that can still be defended (the runs' agreed bound at a lower level, or 1).

Certification: with `max_levels` (a budget) or `stop_below` (a target p_c), when delta is not reached the
last level L_k bounds the event, P(S >= delta) <= P(S > L_k); a run stops once the one-sided upper
confidence bound of P(S > L_k) is below p_c, and the estimate's `certified_below` is the largest bound
over runs (each holds at 1 - alpha, so the largest does).
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from survey.rare.modes import count_modes
from survey.rare.particles import fresh_share, pcn_moves, resample_within_chains, score_batch
from survey.rare.result import RareResult, Score, check_confidence
from survey.rare.runs import ChainRecord, finish, split_repeats


def check_particle_settings(n_particles: int, mcmc_steps: int, runs: int) -> None:
    if n_particles < 2 or mcmc_steps < 1 or runs < 1:
        raise ValueError(f"need particles >= 2, mcmc_steps >= 1 and runs >= 1, got {n_particles}, {mcmc_steps}, "
                         f"{runs}")


def splitting_chains(score: Score, dim: int, delta: float, chains: int, *, generator: torch.Generator,
                     n_particles: int, p0: float, mcmc_steps: int, max_levels: int, stop_below: float | None,
                     confidence: float, target_accept: float, step: float,
                     dtype: torch.dtype) -> list[ChainRecord]:
    """`chains` independent splitting runs as one batch; one ChainRecord each (survey.rare.runs)."""
    device = generator.device
    n = int(n_particles)
    keep = max(1, min(n - 1, math.ceil(p0 * n)))
    z = torch.randn((chains, n, dim), generator=generator, dtype=dtype, device=device)
    s = score_batch(score, z)
    records = [ChainRecord(calls=n) for _ in range(chains)]
    active = torch.ones(chains, dtype=torch.bool, device=device)
    log_path = torch.zeros(chains, dtype=torch.float64)
    var_path = torch.zeros(chains, dtype=torch.float64)
    steps = torch.full((chains,), float(step), dtype=torch.float64, device=device)
    z_upper = float(stats.norm.ppf(confidence))
    while bool(active.any()):
        hits = (s >= delta).sum(dim=1).cpu()
        for b in active.nonzero().squeeze(1).tolist():
            rec = records[b]
            if hits[b] >= keep:
                r = float(hits[b]) / n
                rec.finish_estimate(float(log_path[b]) + math.log(r), float(var_path[b]) + (1 - r) / (r * n))
                rec.extra["survivors"] = z[b][s[b] >= delta].detach().to("cpu", torch.float32)
                rec.modes = count_modes(rec.extra["survivors"])
                active[b] = False
            elif stop_below is not None and rec.levels and \
                    math.exp(float(log_path[b]) + z_upper * math.sqrt(float(var_path[b]))) < stop_below:
                rec.finish_bound(z_upper, "stop_below")
                active[b] = False
            elif len(rec.levels) >= max_levels:
                rec.finish_bound(z_upper, "max_levels")
                active[b] = False
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        za, sa = z[idx], s[idx]
        level = sa.sort(dim=1, descending=True).values[:, keep]
        alive = sa > level[:, None]
        flat = alive.sum(dim=1) == 0
        for j in flat.nonzero().squeeze(1).tolist():   # the top of the score is flat: no level above it
            records[int(idx[j])].finish_bound(z_upper, "flat")
            active[int(idx[j])] = False
        if bool(flat.any()):
            continue
        frac = alive.sum(dim=1).to(torch.float64) / n
        pick = resample_within_chains(alive, generator)
        za, sa = za.gather(1, pick[:, :, None].expand(-1, -1, dim)), sa.gather(1, pick)
        chain = torch.arange(idx.numel(), device=device).repeat_interleave(n)
        fresh = fresh_share((log_path[idx.cpu()] + frac.cpu().log()).to(device)).repeat_interleave(n)
        moved, s_new, move = pcn_moves(score, za.reshape(-1, dim), sa.reshape(-1), level.repeat_interleave(n),
                                       chain, steps[idx], mcmc_steps, generator, target_accept, idx.numel(),
                                       fresh=fresh)
        steps[idx] = move.step
        z[idx], s[idx] = moved.reshape(za.shape), s_new.reshape(sa.shape)
        accept = torch.zeros(idx.numel(), dtype=torch.float64).index_add_(0, chain.cpu(), move.accepted.cpu())
        before = sa.reshape(-1)
        for j, b in enumerate(idx.tolist()):
            f = float(frac[j])
            log_path[b] += math.log(f)
            var_path[b] += (1 - f) / (f * n)
            records[b].add_level(float(level[j]), float(log_path[b]), float(var_path[b]),
                                 float(accept[j]) / (n * mcmc_steps),
                                 _score_correlation(before[j * n:(j + 1) * n], s_new[j * n:(j + 1) * n]), n * mcmc_steps)
    return records


def _score_correlation(before: torch.Tensor, after: torch.Tensor) -> float:
    """Pearson correlation of the particles' scores before and after the level's moves (nan if constant)."""
    b, a = before - before.mean(), after - after.mean()
    den = float(b.norm() * a.norm())
    return float((b * a).sum()) / den if den > 0 else math.nan


def splitting(score: Score, dim: int, delta: float, *, generator: torch.Generator, n_particles: int = 300,
              p0: float = 0.2, mcmc_steps: int = 10, runs: int = 4, max_levels: int = 200,
              stop_below: float | None = None, confidence: float = 0.95, target_accept: float = 0.25,
              step: float = 1.0, dtype: torch.dtype = torch.float64, repeats: int | None = None):
    """Estimate P(S(z) >= delta) by adaptive multilevel splitting with `runs` independent runs (module docstring).

    n_particles: N per run; p0: the surviving fraction per level; mcmc_steps: T pCN steps per level;
    max_levels: the level budget; stop_below: stop a run once P(S > its level) is certified below this;
    step: the initial pCN step. Calls: sum over runs of N (1 + T levels). repeats: return a list of that
    many independent estimates computed as one batch (the coverage tests), instead of one RareResult.
    """
    confidence = check_confidence(confidence)
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"p0 must be in (0, 1), got {p0!r}")
    check_particle_settings(n_particles, mcmc_steps, runs)
    if max_levels < 0:
        raise ValueError(f"max_levels must be >= 0, got {max_levels!r}")
    count = 1 if repeats is None else int(repeats)
    records = splitting_chains(score, dim, delta, runs * count, generator=generator, n_particles=n_particles,
                               p0=p0, mcmc_steps=mcmc_steps, max_levels=max_levels, stop_below=stop_below,
                               confidence=confidence, target_accept=target_accept, step=step, dtype=dtype)
    settings = {"particles": n_particles, "p0": p0, "mcmc_steps": mcmc_steps, "runs": runs}
    results = [combine(group, confidence, settings, delta) for group in split_repeats(records, runs)]
    return results[0] if repeats is None else results


def combine(records: list[ChainRecord], confidence: float, settings: dict, delta: float) -> RareResult:
    """The runs' mean estimate; the interval on log p is the wider of the formula's (normal quantile) and the
    runs' spread's (Student's t with runs - 1 degrees of freedom: the spread is estimated from few runs)."""
    x = [rec.log_p for rec in records if rec.reached]
    v = [rec.rel_var for rec in records if rec.reached]
    p = low = high = None
    rel = None
    if x:
        values = [math.exp(xi) for xi in x]
        p = sum(values) / len(values)
        rel = sum(pv * pv * vi for pv, vi in zip(values, v)) / sum(values) ** 2
        half = float(stats.norm.ppf(0.5 + confidence / 2)) * math.sqrt(rel)
        if len(values) > 1:
            spread = sum((pv - p) ** 2 for pv in values) / (len(values) - 1) / len(values) / (p * p)
            half = max(half, float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * math.sqrt(spread))
            rel = max(rel, spread)
        low, high = p * math.exp(-half), p * math.exp(half)
    return finish("splitting", records, confidence, settings, delta=delta, p=p, low=low or 0.0,
                  high=high if high is not None else 1.0, x=x, v=v, info={"rel_var": rel})


__all__ = ["check_particle_settings", "splitting", "splitting_chains"]
