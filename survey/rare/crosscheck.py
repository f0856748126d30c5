"""A particle estimate checked against importance sampling's design points: failure modes every run lost.

The between-run check of survey.rare.runs sees a failure mode that some runs lost; when every run loses it
the runs agree on a value that is too low. Importance sampling's restarts find the failure modes as design
points z*_k, and its weighted failure draws give each mode's share of p (survey.rare.importance:
`mode_shares`, each draw assigned to the mode whose linearised half-space {u_k . z >= ||z*_k||} it lies
deepest in). The particles that reached delta are assigned the same way. A mode that importance sampling
gives at least LOST_SHARE of p and that no run's particles reached is lost:

- `stop` becomes 'modes_lost' (`lost_modes`, `lost_share` in info), the point estimate stays;
- the interval becomes the hull of the two: ci_high the larger upper end (importance sampling's interval
  counts the lost mode), ci_low the smaller lower end.

Where every mode was reached but the two intervals do not overlap (a mode reached by too few particles:
the runs under-represent it alike), `stop` becomes 'estimators_disagree' with the same hull. A certificate
"P < p_c" stands only where importance sampling's upper end is below it too (so it is wrong only when both
are: runs that all lost a mode certify too low, at p = p_c in 14% of repeats on the three-mode map); else
'estimators_disagree', ci_high the larger upper end. Importance sampling that flagged its own modes as
unresolved (an isotropic set: its design points are arbitrary) checks nothing. Calls add up.
"""

from __future__ import annotations

import dataclasses

import torch

from survey.rare.importance import nearest_mode
from survey.rare.result import RareResult

#: Share of p (by importance sampling) at and above which a mode that no particle reached flags the row.
LOST_SHARE = 0.1


def lost_modes(survivors: list[torch.Tensor | None], design_points: torch.Tensor, shares: list[float]) -> list[int]:
    """Indices of the modes (design_points (K, d), shares (K,)) with share >= LOST_SHARE that none of the
    survivors (per run, (n_r, d) points with S >= delta) is assigned to."""
    points = [s for s in survivors if s is not None and s.numel()]
    if not points:
        return [k for k, share in enumerate(shares) if share >= LOST_SHARE]
    reached = set(nearest_mode(torch.cat(points), design_points).tolist())
    return [k for k, share in enumerate(shares) if share >= LOST_SHARE and k not in reached]


def cross_check(particle: RareResult, design: RareResult) -> RareResult:
    """The particle estimate with its row flagged and widened where importance sampling shows what it lost
    (module docstring); calls are the sum of both."""
    calls = particle.calls + design.calls
    grad_calls = particle.grad_calls + design.grad_calls
    info = {**particle.info, "cross_check": design.method, "cross_check_p": design.p,
            "cross_check_interval": [design.ci_low, design.ci_high], "lost_modes": [], "lost_share": 0.0}
    shares = design.info.get("mode_shares")
    if design.info.get("modes_unresolved") or shares is None:
        info["cross_check"] = None
        return dataclasses.replace(particle, calls=calls, grad_calls=grad_calls, info=info)
    stop = particle.info.get("stop", "reached")
    low, high, certified = particle.ci_low, particle.ci_high, particle.certified_below
    flag = None
    if particle.p is not None:
        lost = lost_modes(particle.info.get("survivors") or [], design.info["design_points"], shares)
        if lost:
            flag = "modes_lost"
            info.update(lost_modes=lost, lost_share=float(sum(shares[k] for k in lost)))
        elif particle.ci_high < design.ci_low or design.ci_high < particle.ci_low:
            flag = "estimators_disagree"
    elif certified is not None and design.ci_high > certified:
        flag = "estimators_disagree"
    if flag is None:
        return dataclasses.replace(particle, calls=calls, grad_calls=grad_calls, info=info)
    if stop in ("reached", "stop_below", "max_levels", "max_moves", "flat"):
        stop = flag
    low, high = min(low, design.ci_low), max(high, design.ci_high)
    if certified is not None:
        certified = high
    info.update(stop=stop, reason=stop, cross_check_flag=flag)
    return dataclasses.replace(particle, ci_low=float(low), ci_high=float(min(1.0, high)), certified_below=certified,
                               calls=calls, grad_calls=grad_calls, info=info)


__all__ = ["LOST_SHARE", "cross_check", "lost_modes"]
