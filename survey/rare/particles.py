"""Batched particle moves shared by the splitting estimators: many independent chains advance as one batch.

A population is B independent chains of N particles each: latents z (B, N, d), scores s (B, N). Every
score call evaluates all moving particles of all chains at once (one network batch), so independent runs,
and repeats in the coverage tests, cost no more Python per step than one run.

The kernel is preconditioned Crank-Nicolson constrained above a per-particle level,

    z' = (z + h w) / sqrt(1 + h^2),  w ~ N(0, I),  accepted iff S(z') > level,

which leaves N(0, I) restricted to {S > level} invariant; the step h is per chain and adapts towards an
acceptance rate `target_accept` (h <- h exp(rate - target), within [1e-4, 1e3]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from survey.rare.result import Score, scores_of
from survey.rare.threads import bookkeeping, network

STEP_RANGE = (1e-4, 1e3)
#: Share of steps that propose an independent draw, while the set's estimated probability is at least
#: FRESH_ABOVE (below it a fresh draw lands in the set too rarely to pay for its call).
FRESH_SHARE = 0.5
FRESH_ABOVE = 1e-3


def fresh_share(log_p: torch.Tensor) -> torch.Tensor:
    """Per particle, the share of independent proposals given log P_hat(S > its level)."""
    return torch.where(log_p >= math.log(FRESH_ABOVE), FRESH_SHARE, 0.0).to(torch.float64)


def score_batch(score: Score, z: torch.Tensor) -> torch.Tensor:
    """score over a (..., d) batch of latents: (...) float64 scores, one call for all of them (on the caller's
    CPU threads inside the moves' one-thread bookkeeping: survey.rare.threads)."""
    flat = z.reshape(-1, z.shape[-1])
    with network():
        s = scores_of(score, flat)
    return s.to(z.device).reshape(z.shape[:-1])


@dataclass
class MoveStats:
    """What T pCN steps did: accepted (M,) proposals accepted per particle, steps taken, the adapted
    per-chain pCN steps (B,) after them."""

    accepted: torch.Tensor
    steps: int
    step: torch.Tensor


def pcn_moves(score: Score, z: torch.Tensor, s: torch.Tensor, level: torch.Tensor, chain: torch.Tensor,
              step: torch.Tensor, steps: int, generator: torch.Generator, target_accept: float,
              chains: int, adapt_within: bool = True,
              fresh: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, MoveStats]:
    """`steps` constrained pCN steps for M particles: z (M, d), s (M,), level (M,) (accept iff S > level),
    chain (M,) the chain index of each particle (for its step size), step (B,) per-chain steps. Returns the
    moved z, s and the move statistics (with the adapted steps). Calls: M * steps.

    adapt_within: adapt the step after every pCN step from the chain's acceptance over its moving particles
    (fine when a chain moves many particles at once); False: keep it fixed during the `steps` steps and adapt
    once after them (a chain moving one particle would otherwise tune the step to that particle's own state,
    which changes the law the kernel leaves invariant).
    fresh: (M,) the probability that a step proposes an independent draw w ~ N(0, I) instead (the pCN step
    with h = infinity: also invariant, and the only move that can reach a failure region no particle is in;
    worth its call only where the set is not yet rare). Acceptance rates count the local proposals only.
    The moves' own tensor operations run on one CPU thread, the score calls on the caller's (survey.rare.threads)."""
    with bookkeeping():
        return _pcn_moves(score, z, s, level, chain, step, steps, generator, target_accept, adapt_within, fresh)


def _pcn_moves(score: Score, z: torch.Tensor, s: torch.Tensor, level: torch.Tensor, chain: torch.Tensor,
               step: torch.Tensor, steps: int, generator: torch.Generator, target_accept: float, adapt_within: bool,
               fresh: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, MoveStats]:
    step = step.clone()
    z, s = z.clone(), s.clone()   # updated in place below (accepted rows only)
    accepted = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    local_accepted = torch.zeros_like(accepted)
    local_count = torch.zeros_like(accepted)
    for _ in range(steps):
        h = step[chain][:, None].to(z.dtype)
        shrink = torch.rsqrt(1.0 + step * step)[chain][:, None].to(z.dtype)
        w = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        local = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
        if fresh is not None:   # drawn every step, so the stream does not depend on the share
            local = torch.rand(z.shape[0], generator=generator, device=generator.device).to(z.device) >= fresh
        if bool(local.all()):
            proposal = w.mul_(h).add_(z).mul_(shrink)
        else:
            proposal = torch.where(local[:, None], (z + h * w) * shrink, w)
        s_new = score_batch(score, proposal)
        ok = s_new > level
        z[ok] = proposal[ok]
        s[ok] = s_new[ok]
        okf = ok.to(torch.float64)
        accepted += okf
        localf = local.to(torch.float64)
        local_accepted += okf * localf
        local_count += localf
        if adapt_within:
            step = _adapt(step, chain, okf * localf, localf, target_accept, 1.0)
    if not adapt_within:
        step = _adapt(step, chain, local_accepted, local_count, target_accept, 2.0)
    return z, s, MoveStats(accepted, steps, step)


def _adapt(step: torch.Tensor, chain: torch.Tensor, accepted: torch.Tensor, proposed: torch.Tensor,
           target: float, gain: float) -> torch.Tensor:
    """step <- step exp(gain (rate - target)) per chain with local proposals, rate their acceptance."""
    acc = torch.zeros_like(step).index_add_(0, chain, accepted)
    tried = torch.zeros_like(step).index_add_(0, chain, proposed)
    rate = acc / tried.clamp(min=1)
    return torch.where(tried > 0, (step * torch.exp(gain * (rate - target))).clamp(*STEP_RANGE), step)


def resample_within_chains(alive: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices (B, N) into each chain's particles: chain b's n_b alive particles, each copied floor(N / n_b) or
    ceil(N / n_b) times (which ones get the extra copy at random). alive: (B, N) bool, every row non-empty."""
    chains, n = alive.shape
    keys = torch.rand((chains, n), generator=generator, device=generator.device).to(alive.device)
    keys = torch.where(alive, keys, torch.full_like(keys, 2.0))
    order = keys.argsort(dim=1)   # alive first, in random order
    count = alive.sum(dim=1, keepdim=True)
    position = torch.arange(n, device=alive.device)[None, :] % count
    return order.gather(1, position)


__all__ = ["FRESH_ABOVE", "FRESH_SHARE", "MoveStats", "STEP_RANGE", "fresh_share", "pcn_moves", "resample_within_chains", "score_batch"]
