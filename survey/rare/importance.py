"""Importance sampling at the most probable failure points (FORM design points), mixture proposal.

For p = P(S(z) >= delta), z ~ N(0, I_d): the design point z* is the failure point nearest the origin,
min ||z|| subject to S(z) >= delta. It is found by the HL-RF iteration (Hasofer-Lind, Rackwitz-
Fiessler) on h(z) = delta - S(z), with the gradient by autograd, from several random starts run as
one batch:

    z <- ((grad h . z - h(z)) / ||grad h||^2) grad h,

(the point of the linearised limit surface nearest the origin), with a merit line search (plain
HL-RF cycles on curved surfaces). The distinct converged points within `margin` of the smallest
||z*|| become the means of the proposal q = sum_k pi_k N(z*_k, I), pi_k ~ exp(-||z*_k||^2 / 2)
(restarts find the symmetric or competing failure modes). Then p_hat = mean(w 1{S >= delta}) over n
draws from q with w = phi(z) / q(z) (in log space). The interval is the normal one for the weighted
mean on the log scale, p_hat exp(-+ z se / p_hat), se the standard error of w 1{S >= delta}; `ess` is
the effective number of failure draws, (sum w 1)^2 / sum (w 1)^2. The score must be differentiable in z.

The method is only as good as its list of failure modes: a mode no restart found is missed, and p is then
underestimated with a confident interval (on a near-isotropic failure set, the identity under white noise,
every restart finds its own design point and the mixture covers a vanishing part of the set: 1e-15 against
an exact 1e-6). The restarts say when that is likely: the Good-Turing estimate of the chance that one more
restart would find a mode not yet seen is (modes found by exactly one restart) / (restarts that converged).
Above UNSEEN_LIMIT the result is flagged (`info["unseen_modes"]`, `info["modes_unresolved"]`) and its upper
end is 1: the draws still bound p from below, they say nothing above. Use splitting there.
`info["mode_shares"]` is each design point's share of p_hat (each failure draw assigned to the mode whose
linearised half-space it lies deepest in, `nearest_mode`): survey.rare.crosscheck compares the particle
estimators' survivors with it.
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from survey.rare.result import RareResult, Score, check_confidence, log10_or_none, scores_of

#: Good-Turing chance of an unseen failure mode above which the interval's upper end is dropped (set to 1).
UNSEEN_LIMIT = 0.25


def _value_and_grad(score: Score, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        s = score(z).reshape(-1)
        if not s.requires_grad:
            raise ValueError("importance sampling needs a score differentiable in z (this one carries no "
                             "gradient: a piecewise-constant family such as poisson? use splitting)")
        (grad,) = torch.autograd.grad(s.sum(), z)
    return s.detach().to(torch.float64), grad.detach().to(torch.float64)


def design_points(score: Score, dim: int, delta: float, *, generator: torch.Generator, restarts: int = 8,
                  iterations: int = 100, tol: float = 1e-5, start_scales: tuple[float, ...] = (1.0, 2.0, 4.0),
                  steps: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125),
                  dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Improved HL-RF (Zhang and Der Kiureghian 1995) from `restarts` random starts z0 ~ N(0, c^2 I), c taking
    the `start_scales` in turn (wide starts reach failure modes that the gradient near the origin points away
    from: on S = max(t, -3 t - 6.16) every start from N(0, I) with t > -1.54 goes to the near mode).

    Each iteration takes the HL-RF direction d = z_HLRF - z and the step lambda in `steps` with the
    smallest merit 1/2 ||z + lambda d||^2 + c |h(z + lambda d)|, c = 2 ||z|| / ||grad h|| (plain
    HL-RF cycles on curved limit surfaces); the trial steps of all restarts are one score call.
    Returns (points (R, d) float64, residual h = delta - S at them (R,), score evaluations, of which
    gradient evaluations).
    """
    device = generator.device
    scales = torch.tensor(start_scales, dtype=torch.float64, device=device).repeat(restarts // len(start_scales) + 1)
    z = scales[:restarts, None] * torch.randn((restarts, dim), generator=generator, dtype=torch.float64, device=device)
    calls = grad_calls = 0
    active = torch.ones(restarts, dtype=torch.bool, device=device)
    lam = torch.tensor(steps, dtype=torch.float64, device=device)
    scale = max(abs(delta), 1e-12)
    for _ in range(iterations):
        idx = active.nonzero().squeeze(1)
        za = z[idx]
        s, g = _value_and_grad(score, za.to(dtype))
        calls += idx.numel()
        grad_calls += idx.numel()
        h = delta - s
        g = -g  # grad h
        norm2 = (g * g).sum(dim=1).clamp(min=1e-300)
        target = (((g * za).sum(dim=1) - h) / norm2)[:, None] * g
        d = target - za
        c = 2.0 * za.norm(dim=1) / norm2.sqrt() + 1.0
        trial = za[:, None, :] + lam[None, :, None] * d[:, None, :]  # (A, L, d)
        h_trial = delta - scores_of(score, trial.reshape(-1, dim).to(dtype)).to(device).reshape(trial.shape[:2])
        calls += trial.shape[0] * trial.shape[1]
        merit = 0.5 * (trial * trial).sum(dim=2) + c[:, None] * h_trial.abs()
        best = merit.argmin(dim=1)
        z[idx] = trial[torch.arange(idx.numel(), device=device), best]
        h_new = h_trial[torch.arange(idx.numel(), device=device), best]
        moved = (lam[best] * d.norm(dim=1)) / (1.0 + za.norm(dim=1))
        # converged: on the surface and z parallel to the gradient (the KKT condition of min ||z||)
        cos = (g * za).sum(dim=1) / (norm2.sqrt() * za.norm(dim=1).clamp(min=1e-300))
        done = (moved < tol) & (h_new.abs() < tol * scale) | ((h.abs() < tol * scale) & (cos.abs() > 1 - tol))
        active[idx[done]] = False
        if not bool(active.any()):
            break
    final = scores_of(score, z.to(dtype)).to(device)
    calls += restarts
    return z, (delta - final), calls, grad_calls


def _select(points: torch.Tensor, residual: torch.Tensor, delta: float, margin: float,
            dedupe: float) -> tuple[torch.Tensor, list[int]]:
    """Distinct design points that reach the failure set, within `margin` of the nearest, and how many
    restarts converged to each."""
    ok = residual <= 1e-3 * max(abs(delta), 1e-12)
    candidates = points[ok] if bool(ok.any()) else points[residual.argmin()][None]
    radius = candidates.norm(dim=1)
    order = radius.argsort()
    candidates, radius = candidates[order], radius[order]
    kept: list[torch.Tensor] = []
    found: list[int] = []
    for point, r in zip(candidates, radius):
        if r > radius[0] + margin:
            break
        same = [i for i, q in enumerate(kept) if (point - q).norm() <= dedupe * max(float(r), 1.0)]
        if same:
            found[same[0]] += 1
        else:
            kept.append(point)
            found.append(1)
    return torch.stack(kept), found


def mixture_weights(means: torch.Tensor) -> torch.Tensor:
    """log pi_k of the proposal: half by exp(-||mu_k||^2 / 2) (the modes' FORM weights), half equal, so that every
    design point found keeps at least 1 / (2K) of the draws (a defensive mixture: a far mode is still sampled)."""
    form = torch.softmax(-0.5 * (means * means).sum(dim=1), dim=0)
    return torch.log(0.5 * form + 0.5 / means.shape[0])


def nearest_mode(z: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """(n,) index of the design point whose linearised failure half-space {u_k . z >= ||mu_k||}, u_k = mu_k /
    ||mu_k||, each point of z (n, d) lies deepest in: argmax_k (u_k . z - ||mu_k||)."""
    means = means.to(z.device, torch.float64)
    radius = means.norm(dim=1).clamp(min=1e-12)
    return (z.to(torch.float64) @ (means / radius[:, None]).T - radius[None, :]).argmax(dim=1)


def _draw(score: Score, means: torch.Tensor, log_pi: torch.Tensor, count: int, delta: float,
          generator: torch.Generator, batch: int, dtype: torch.dtype):
    """count draws from the mixture sum_k pi_k N(mu_k, I): z (count, d) float64, log w = log phi(z) -
    log q(z) and the failure indicator; the score runs `batch` draws at a time."""
    device = generator.device
    sq = (means * means).sum(dim=1)
    comp = torch.multinomial(log_pi.exp(), count, replacement=True, generator=generator)
    z = means[comp] + torch.randn((count, means.shape[1]), generator=generator, dtype=torch.float64, device=device)
    # log q(z) - log phi(z) = logsumexp_k(log pi_k + z.mu_k - ||mu_k||^2 / 2)
    log_ratio = torch.logsumexp(log_pi[None, :] + z @ means.T - 0.5 * sq[None, :], dim=1)
    fail = torch.cat([scores_of(score, part.to(dtype)).to(device) for part in z.split(batch)]) >= delta
    return z, -log_ratio, fail


def importance(score: Score, dim: int, delta: float, *, generator: torch.Generator, n: int = 2000,
               restarts: int = 32, iterations: int = 100, margin: float = math.inf, dedupe: float = 0.05,
               batch: int = 4096, confidence: float = 0.95, dtype: torch.dtype = torch.float64,
               means: torch.Tensor | None = None, repeats: int | None = None):
    """Estimate P(S(z) >= delta) by importance sampling around the design points (module docstring).

    n: draws from the proposal; restarts, iterations: the HL-RF search (a failure mode no restart
    finds is missed, and p underestimated with a confident interval: with 8 restarts 6% of the runs on
    the two-mode gated map found one mode, and 16 often missed the far mode of S = max(t, -3 t - 6.16);
    32 is the default, docs/INTERVALS.md); margin: keep design points
    with ||z*|| <= min ||z*|| + margin (default: every one found, each covered by the defensive mixture); dedupe: points closer than dedupe * ||z*|| count as one;
    means: skip the search and use these (K, d) proposal means. repeats: a list of that many independent
    estimates, their design-point searches run as one batch (the coverage tests).
    """
    confidence = check_confidence(confidence)
    count = 1 if repeats is None else int(repeats)
    calls = grad_calls = 0
    if means is None:
        points, residual, calls, grad_calls = design_points(score, dim, delta, generator=generator,
                                                            restarts=restarts * count, iterations=iterations,
                                                            dtype=dtype)
        found = [_select(points[r * restarts:(r + 1) * restarts], residual[r * restarts:(r + 1) * restarts], delta,
                         margin, dedupe) for r in range(count)]
    else:
        found = [(means, None)] * count
    results = [_sample(score, m, f, delta, n, batch, confidence, dtype, generator, calls // count,
                       grad_calls // count) for m, f in found]
    return results[0] if repeats is None else results


def _sample(score: Score, means: torch.Tensor, found: list[int] | None, delta: float, n: int, batch: int,
            confidence: float, dtype: torch.dtype, generator: torch.Generator, calls: int,
            grad_calls: int) -> RareResult:
    """n draws from the defensive mixture at `means` and the weighted estimate with its interval and flags."""
    device = generator.device
    unseen = None if found is None else sum(1 for f in found if f == 1) / sum(found)
    means = means.to(device=device, dtype=torch.float64)
    log_pi = mixture_weights(means)
    total = torch.zeros((), dtype=torch.float64)
    total_sq = torch.zeros((), dtype=torch.float64)
    by_mode = torch.zeros(means.shape[0], dtype=torch.float64)
    hits = 0
    for start in range(0, n, batch):
        count = min(batch, n - start)
        z, log_w, fail = _draw(score, means, log_pi, count, delta, generator, batch, dtype)
        calls += count
        w = torch.where(fail, log_w.exp(), torch.zeros_like(log_w))
        total += w.sum().cpu()
        total_sq += (w * w).sum().cpu()
        by_mode += torch.zeros_like(by_mode).index_add_(0, nearest_mode(z, means).cpu(), w.cpu())
        hits += int(fail.sum())
    p = float(total) / n
    var = max(float(total_sq) / n - p * p, 0.0) / max(n - 1, 1)
    ess = float(total) ** 2 / float(total_sq) if float(total_sq) > 0 else 0.0
    if p > 0:
        half = stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(var) / p
        low, high = p * math.exp(-half), p * math.exp(half)
    else:  # no failure drawn: the weighted mean says nothing about p
        low, high = 0.0, 1.0
    unresolved = unseen is not None and unseen > UNSEEN_LIMIT
    if unresolved:  # failure modes likely missed: p_hat may be far too low, nothing bounds p from above
        high = 1.0
    info = {"design_radius": [float(r) for r in means.norm(dim=1)], "components": int(means.shape[0]),
            "stop": "modes_unresolved" if unresolved else "reached",
            "hits": hits, "rel_se": math.sqrt(var) / p if p > 0 else None, "unseen_modes": unseen,
            "modes_unresolved": unresolved, "design_points": means.detach().to("cpu", torch.float32),
            "mode_shares": (by_mode / float(total)).tolist() if float(total) > 0 else None}
    return RareResult("importance", p, low, high, confidence, log10_or_none(p), calls, ess=ess,
                      grad_calls=grad_calls, info=info)


__all__ = ["design_points", "importance", "nearest_mode"]
