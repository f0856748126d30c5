"""Last-particle splitting (moving particles): an exact interval from a Poisson count, and certification.

For p = P(S(z) >= delta), z ~ N(0, I_d) (Guyader, Hengartner and Matzner-Lober, Appl. Math. Optim. 2011;
Walter, Stat. Comput. 2015; Tit, Furon and Rousset, NeurIPS 2021): each of N particles is moved upwards
in turn, replaced by a draw of S's law conditioned above its own score s_i (a copy of a random particle
with a higher score, then T pCN steps constrained to S > s_i), until its score reaches delta. Under ideal
sampling the levels a particle visits are the records of a Poisson process: with u = -log P(S > s) the
visited u's form a unit-rate Poisson process, so the number of moves below delta, summed over N
independent particles, is

    M ~ Poisson(N lambda),  lambda = -log p,  p_hat = (1 - 1/N)^M (unbiased),

whatever order the particles move in. Under real (pCN) sampling a moved particle stays near the copy it
started from, so the order matters: each iteration moves the lowest `kill_fraction` of a run's particles
at once (one network batch per pCN step; the others, all above them, are the copies' sources). The
interval is the exact (Garwood) Poisson interval for N lambda, mapped to p = exp(-lambda), widened where
the spread of the runs' counts says more (Student's t on their log estimates); `runs` independent runs
pool their counts (M = sum of the runs' counts, N = runs x particles) and their agreement is checked
(survey.rare.runs).

Certification of p < p_c at confidence 1 - alpha: if p >= p_c then M is at least Poisson(-N log p_c), so
M >= m_c, the smallest m with P(Poisson(-N log p_c) >= m) <= alpha, happens with probability <= alpha.
A run that reaches m_c moves before every particle reaches delta certifies p < p_c (`stop_below`), in at
most about N (-log p_c) moves. The estimate certifies only when every run does (each on its own count:
pooled counts let runs that lost a failure mode outvote one that kept it; docs/INTERVALS.md); if some run reached delta instead, `stop` is
runs_disagree and the upper end the largest over runs. Calls: N per run to start, T per move.
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from survey.rare.particles import fresh_share, pcn_moves, score_batch
from survey.rare.result import RareResult, Score, check_confidence
from survey.rare.runs import ChainRecord, finish, split_repeats
from survey.rare.splitting import check_particle_settings

#: Path points kept per run for the agreement checks at lower levels (every N / PATH_POINTS moves).
PATH_POINTS = 4
#: Share of a run's particles moved per iteration (the lowest ones).
KILL = 0.1


def certifying_moves(n_total: int, p_c: float, confidence: float) -> int:
    """m_c: the smallest move count m with P(Poisson(-n_total log p_c) >= m) <= 1 - confidence."""
    lam = -n_total * math.log(p_c)
    return int(stats.poisson.isf(1.0 - confidence, lam)) + 1


def poisson_interval(moves: int, n_total: int, confidence: float) -> tuple[float, float]:
    """The exact two-sided interval for p from M = moves ~ Poisson(-n_total log p)."""
    alpha = 1.0 - confidence
    lam_low = 0.0 if moves == 0 else float(stats.chi2.ppf(alpha / 2, 2 * moves)) / 2
    lam_high = float(stats.chi2.ppf(1 - alpha / 2, 2 * moves + 2)) / 2
    return math.exp(-lam_high / n_total), math.exp(-lam_low / n_total)


def last_particle_chains(score: Score, dim: int, delta: float, chains: int, *, generator: torch.Generator,
                         n_particles: int, mcmc_steps: int, kill_fraction: float, max_moves: int | None, group: int,
                         certify_at: int | None, target_accept: float, step: float,
                         dtype: torch.dtype) -> list[ChainRecord]:
    """`chains` independent runs as one batch; a group of `group` consecutive chains stops together once its
    pooled move count reaches `certify_at` (certification; group 1: each run on its own count) or `max_moves`
    per chain (the budget)."""
    device = generator.device
    n = int(n_particles)
    kill = max(1, round(kill_fraction * n))
    z = torch.randn((chains, n, dim), generator=generator, dtype=dtype, device=device)
    s = score_batch(score, z)
    moves = torch.zeros((chains, n), dtype=torch.int64, device=device)
    killed: list[list[torch.Tensor]] = [[] for _ in range(chains)]
    records = [ChainRecord(calls=n) for _ in range(chains)]
    accept_sum = torch.zeros(chains, dtype=torch.float64)
    proposals = torch.zeros(chains, dtype=torch.float64)
    steps = torch.full((chains,), float(step), dtype=torch.float64, device=device)
    stopped = torch.zeros(chains, dtype=torch.bool, device=device)
    groups = torch.arange(chains, device=device) // group
    while True:
        total = moves.sum(dim=1)
        if certify_at is not None or max_moves is not None:
            pooled = torch.zeros(int(groups.max()) + 1, dtype=torch.int64, device=device).index_add_(0, groups, total)
            if certify_at is not None:
                stopped |= pooled[groups] >= certify_at
            if max_moves is not None:
                stopped |= total >= max_moves
        below = (s < delta) & ~stopped[:, None]
        if not bool(below.any()):
            break
        sorted_s, order = s.sort(dim=1)
        higher = n - torch.searchsorted(sorted_s.contiguous(), s.contiguous(), right=True)   # (B, N) strictly above
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=device).expand(chains, n))
        movers = below & (higher > 0) & (rank < kill)   # the `kill` lowest: the others start near S | S > s_i
        b_idx, i_idx = movers.nonzero(as_tuple=True)
        pick = (torch.rand(b_idx.numel(), generator=generator, device=device) * higher[b_idx, i_idx]).long()
        source = order[b_idx, n - higher[b_idx, i_idx] + pick.clamp(max=higher[b_idx, i_idx] - 1)]
        level = s[b_idx, i_idx]
        chains_moved, sizes = torch.unique_consecutive(b_idx, return_counts=True)
        for b, lv in zip(chains_moved.tolist(), level.split(sizes.tolist())):
            killed[b].append(lv.cpu())
        moved, s_new, move = pcn_moves(score, z[b_idx, source], s[b_idx, source], level, b_idx, steps,
                                       mcmc_steps, generator, target_accept, chains, adapt_within=False,
                                       fresh=fresh_share(-total.to(torch.float64)[b_idx] / n))
        steps = move.step
        z[b_idx, i_idx], s[b_idx, i_idx] = moved, s_new
        moves[b_idx, i_idx] += 1
        counted = torch.bincount(b_idx, minlength=chains).cpu()
        accept_sum += torch.zeros(chains, dtype=torch.float64).index_add_(0, b_idx.cpu(), move.accepted.cpu())
        proposals += counted.to(torch.float64) * mcmc_steps
        for b in counted.nonzero().squeeze(1).tolist():
            records[b].calls += int(counted[b]) * mcmc_steps
    for b, rec in enumerate(records):
        _finish_record(rec, killed[b], moves[b], n, float(accept_sum[b] / proposals[b].clamp(min=1)),
                       bool((s[b] >= delta).all()))
        rec.extra["survivors"] = z[b][s[b] >= delta].detach().to("cpu", torch.float32)
    return records


def _finish_record(rec: ChainRecord, killed: list[torch.Tensor], moves: torch.Tensor, n: int, accept: float,
                   reached: bool) -> None:
    """The run's count, its path (log P_hat(S > L) = -k / N after k moves below L, variance k / N^2) and mixing."""
    levels = torch.cat(killed).sort().values if killed else torch.zeros(0, dtype=torch.float64)
    m = int(levels.numel())
    every = max(1, n // PATH_POINTS)
    for k in range(every, m + 1, every):
        rec.levels.append(float(levels[k - 1]))
        rec.log_path.append(-k / n)
        rec.var_path.append(k / (n * n))
        rec.accept.append(accept)
        rec.score_correlation.append(math.nan)
    rec.extra.update(moves=m, dispersion=_dispersion(moves))
    if reached:
        rec.finish_estimate(-m / n, max(m, 1) / (n * n))
    else:
        rec.reached, rec.reason = False, "max_moves"


def _dispersion(moves: torch.Tensor) -> float:
    """The p-value of the index of dispersion of the per-particle move counts (iid Poisson under ideal
    sampling): sum (m_i - mean)^2 / mean against chi2(N - 1), upper tail."""
    m = moves.to(torch.float64)
    mean = float(m.mean())
    if mean <= 0:
        return 1.0
    d = float(((m - mean) ** 2).sum()) / mean
    return float(stats.chi2.sf(d, m.numel() - 1))


def last_particle(score: Score, dim: int, delta: float, *, generator: torch.Generator, n_particles: int = 100,
                  mcmc_steps: int = 10, runs: int = 4, kill_fraction: float = KILL, stop_below: float | None = None,
                  max_moves: int | None = None, confidence: float = 0.95, target_accept: float = 0.25,
                  step: float = 1.0, dtype: torch.dtype = torch.float64, repeats: int | None = None):
    """Estimate P(S(z) >= delta) by last-particle splitting with `runs` independent runs (module docstring).

    stop_below: certify p < stop_below (stop once the pooled count reaches m_c); max_moves: a budget of moves
    per run (a run that exhausts it gives no estimate: ci_high 1). Calls: runs * N + T * moves.
    repeats: a list of that many independent estimates computed as one batch (the coverage tests).
    """
    confidence = check_confidence(confidence)
    check_particle_settings(n_particles, mcmc_steps, runs)
    if stop_below is not None and not 0.0 < stop_below < 1.0:
        raise ValueError(f"stop_below must be in (0, 1), got {stop_below!r}")
    count = 1 if repeats is None else int(repeats)
    n_total = runs * n_particles
    # each run certifies on its own count (a run that kept a failure mode others lost reaches delta instead)
    certify_at = None if stop_below is None else certifying_moves(n_particles, stop_below, confidence)
    records = last_particle_chains(score, dim, delta, runs * count, generator=generator, n_particles=n_particles,
                                   mcmc_steps=mcmc_steps, kill_fraction=kill_fraction, max_moves=max_moves, group=1, certify_at=certify_at,
                                   target_accept=target_accept, step=step, dtype=dtype)
    settings = {"particles": n_particles, "mcmc_steps": mcmc_steps, "runs": runs}
    results = [_combine(g, confidence, settings, delta, n_particles, certify_at, stop_below)
               for g in split_repeats(records, runs)]
    return results[0] if repeats is None else results


def _combine(records: list[ChainRecord], confidence: float, settings: dict, delta: float, n: int,
             certify_at: int | None, stop_below: float | None) -> RareResult:
    n_total = n * len(records)
    moves = sum(rec.extra["moves"] for rec in records)
    info = {"moves": moves, "certifying_moves": certify_at,
            "dispersion_p": [rec.extra["dispersion"] for rec in records]}
    certified = [certify_at is not None and rec.extra["moves"] >= certify_at for rec in records]
    if any(certified):
        for rec, done in zip(records, certified):
            if done:   # this run certified p < stop_below (module docstring)
                rec.reached, rec.reason, rec.bound = False, "stop_below", stop_below
            elif rec.reached:   # it reached delta first: its own exact upper end
                rec.bound = poisson_interval(rec.extra["moves"], n, confidence)[1]
        if not all(certified):   # runs that reached delta speak against the certificate: no certificate
            for rec in records:
                rec.reached, rec.reason = False, "runs_disagree"
                rec.bound = max(r.bound for r in records if r.bound is not None)
        return finish("last-particle", records, confidence, settings, delta=delta, p=None, low=0.0, high=1.0,
                      x=[], v=[], info=info)
    elif all(rec.reached for rec in records):
        p = (1.0 - 1.0 / n_total) ** moves
        low, high = poisson_interval(moves, n_total, confidence)
        x = [rec.log_p for rec in records]
        v = [rec.rel_var for rec in records]
        if len(x) > 1:   # the runs' spread: exact only if sampling is ideal, so never narrower than the spread says
            mean = sum(x) / len(x)
            sd = math.sqrt(sum((xi - mean) ** 2 for xi in x) / (len(x) - 1) / len(x))
            half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * sd
            low, high = min(low, math.exp(mean - half)), max(high, math.exp(mean + half))
            info["spread_log_sd"] = sd
        return finish("last-particle", records, confidence, settings, delta=delta, p=p, low=low, high=high, x=x, v=v,
                      info=info)
    for rec in records:
        if not rec.reached and rec.bound is None:
            rec.bound = 1.0   # a budget ran out before delta: nothing bounds p from above
    return finish("last-particle", records, confidence, settings, delta=delta, p=None, low=0.0, high=1.0, x=[], v=[],
                  info=info)


__all__ = ["certifying_moves", "last_particle", "poisson_interval"]
