"""Several independent runs per estimate: their agreement, their mixing, and what can still be defended.

Each run of a splitting estimator (fixed proportion or last particle) leaves a `ChainRecord`: its path of
levels L with log P_hat(S > L) and the formula's variance of that log (exact only under perfect mixing),
its mixing diagnostics per level (acceptance rate of the level's pCN moves, the correlation of the
particles' scores before and after them: copies that did not decorrelate keep their parent's score), and how it ended (an estimate at delta, or a
certified bound). `finish` turns R runs into one `RareResult`:

- agreement: Q = sum_r (x_r - x_bar)^2 / v_r over the runs' log estimates x_r (inverse-variance mean
  x_bar) against chi2(R - 1) at ALPHA_AGREE, at delta and at every level the runs share (their paths
  interpolated there; certified runs are compared on their paths). A failure mode that some runs lost puts
  their estimates orders of magnitude apart: Q explodes. (All runs losing it is not detected: more runs
  make it rarer.)
- mixing: a level whose moves accepted less than MIN_ACCEPT of the proposals, or left the scores
  correlated above MAX_SCORE_CORRELATION with where they started, fails (its particles are copies, not
  samples).
- when either fails, `stop` names it ("runs_disagree", "mixing") and `ci_high` is what the runs still
  defend: P(S >= delta) <= P(S > L) for every L < delta, so the largest upper end over runs of
  P(S > L*) at the highest level L* up to which all runs agree and mix; 1 when no such level exists.
  ci_low is the smallest lower end over runs (a run that lost a mode only underestimates).

`info["survivors"]` keeps each run's particles that reached delta (n_r, d) for survey.rare.crosscheck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scipy import stats

from survey.rare.result import RareResult, log10_or_none

#: Level of the agreement test between runs (a false alarm only widens an interval).
ALPHA_AGREE = 0.01
#: Mixing fails at a level whose pCN moves accepted less than this fraction of proposals ...
MIN_ACCEPT = 0.02
#: ... or whose scores after the moves correlate with those before above this.
MAX_SCORE_CORRELATION = 0.95


@dataclass
class ChainRecord:
    """One run: its level path (level, log P_hat(S > level), variance of that log), per-level mixing, its end."""

    calls: int = 0
    levels: list[float] = field(default_factory=list)
    log_path: list[float] = field(default_factory=list)
    var_path: list[float] = field(default_factory=list)
    accept: list[float] = field(default_factory=list)
    score_correlation: list[float] = field(default_factory=list)
    reached: bool = False
    log_p: float | None = None
    rel_var: float | None = None
    bound: float | None = None
    reason: str = "reached"
    modes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def add_level(self, level: float, log_p: float, var: float, accept: float, score_correlation: float,
                  calls: int) -> None:
        self.levels.append(level)
        self.log_path.append(log_p)
        self.var_path.append(var)
        self.accept.append(accept)
        self.score_correlation.append(score_correlation)
        self.calls += calls

    def finish_estimate(self, log_p: float, rel_var: float) -> None:
        self.reached, self.log_p, self.rel_var = True, log_p, rel_var

    def finish_bound(self, z_upper: float, reason: str) -> None:
        """Certified: the one-sided upper bound of P(S > last level) at the z_upper quantile."""
        self.reached, self.reason = False, reason
        self.bound = 1.0 if not self.levels else min(1.0, math.exp(self.log_path[-1] + z_upper * math.sqrt(
            self.var_path[-1])))

    def first_mixing_failure(self) -> int | None:
        """Index of the first level whose moves failed to mix (None if all mixed)."""
        for j, (a, c) in enumerate(zip(self.accept, self.score_correlation)):
            if a < MIN_ACCEPT or (not math.isnan(c) and c > MAX_SCORE_CORRELATION):
                return j
        return None

    def at(self, level: float) -> tuple[float, float]:
        """(log P_hat(S > L), variance) at the highest recorded level <= L (conservative for an upper bound)."""
        x = v = 0.0
        for l, lp, vp in zip(self.levels, self.log_path, self.var_path):
            if l > level:
                break
            x, v = lp, vp
        return x, v

    def interpolated(self, level: float) -> tuple[float, float]:
        """(log P_hat(S > L), variance) linear in L between the recorded levels (for comparing runs)."""
        ls = self.levels
        if level <= ls[0]:
            return self.log_path[0], self.var_path[0]
        for j in range(1, len(ls)):
            if level <= ls[j]:
                w = (level - ls[j - 1]) / max(ls[j] - ls[j - 1], 1e-300)
                return (self.log_path[j - 1] + w * (self.log_path[j] - self.log_path[j - 1]),
                        self.var_path[j - 1] + w * (self.var_path[j] - self.var_path[j - 1]))
        return self.log_path[-1], self.var_path[-1]


def split_repeats(records: list[ChainRecord], runs: int) -> list[list[ChainRecord]]:
    return [records[i:i + runs] for i in range(0, len(records), runs)]


def agreement(x: list[float], v: list[float]) -> tuple[float, float]:
    """(Q, its chi2(R - 1) p-value) for log estimates x with variances v; (0, 1) for a single run."""
    if len(x) < 2:
        return 0.0, 1.0
    w = [1.0 / max(vi, 1e-12) for vi in v]
    mean = sum(wi * xi for wi, xi in zip(w, x)) / sum(w)
    q = sum(wi * (xi - mean) ** 2 for wi, xi in zip(w, x))
    return q, float(stats.chi2.sf(q, len(x) - 1))


def defensible_upper(records: list[ChainRecord], z: float, delta: float) -> tuple[float, float | None, bool]:
    """(upper end, level L*, disagreed): the largest upper end over runs of P(S > L*) at the highest level L* up
    to which every run mixed and the runs agree (module docstring), (1, None) when there is none; disagreed:
    whether the runs disagreed at some level they share."""
    limit = delta
    for rec in records:
        failure = rec.first_mixing_failure()
        if failure is not None:   # levels after the failed moves are not samples
            limit = min(limit, rec.levels[failure])
    if any(not rec.levels for rec in records):
        return 1.0, None, False
    start = max(rec.levels[0] for rec in records)   # every run has a level at or below each candidate
    limit = min([limit] + [rec.levels[-1] for rec in records])
    candidates = sorted({l for rec in records for l in rec.levels if start <= l <= limit})
    best: tuple[float, float | None] = (1.0, None)
    for level in candidates:
        compared = [rec.interpolated(level) for rec in records]
        _, p_value = agreement([x for x, _ in compared], [v for _, v in compared])
        if p_value < ALPHA_AGREE:
            return best[0], best[1], True
        best = (min(1.0, max(math.exp(x + z * math.sqrt(v)) for x, v in (rec.at(level) for rec in records))), level)
    return best[0], best[1], False


def finish(method: str, records: list[ChainRecord], confidence: float, settings: dict[str, Any], *,
           delta: float, p: float | None, low: float, high: float, x: list[float], v: list[float],
           info: dict[str, Any]) -> RareResult:
    """The estimate from R runs with its checks: p, [low, high] as the estimator pooled them; x, v the runs'
    log estimates and variances for the agreement test (module docstring)."""
    z_two = float(stats.norm.ppf(0.5 + confidence / 2))
    reached = all(rec.reached for rec in records)
    q, p_agree = agreement(x, v) if reached else (0.0, 1.0)
    mixing = [rec.first_mixing_failure() for rec in records]
    stop = "reached" if reached else next(rec.reason for rec in records if not rec.reached)
    certified = None
    if not reached:   # a certified bound: the largest over runs (each holds at 1 - alpha)
        p, low, high = None, 0.0, max(rec.bound if not rec.reached else high for rec in records)
        certified = high
    defended, defended_level, path_disagrees = defensible_upper(records, z_two, delta)
    failed = "runs_disagree" if p_agree < ALPHA_AGREE or path_disagrees else \
        ("mixing" if any(m is not None for m in mixing) else None)
    if not failed:
        defended_level = None
    if failed:
        stop = failed
        high = max(high, defended)
        low = min(low, min((math.exp(xi - z_two * math.sqrt(vi)) for xi, vi in zip(x, v)), default=low))
        if certified is not None:
            certified = high
    modes = [rec.modes for rec in records if rec.modes is not None]
    info = {**info, "runs": len(records), "agreement_q": q, "agreement_p": p_agree, "stop": stop,
            "defended_level": defended_level, "mixing_failure_level": mixing, "modes": max(modes) if modes else None,
            "modes_per_run": [rec.modes for rec in records], "settings": settings,
            "accept": [rec.accept for rec in records], "score_correlation": [rec.score_correlation for rec in records],
"run_log10_p": [xi / math.log(10) for xi in x],
            "level_values": [rec.levels for rec in records], "reason": stop,
            "survivors": [rec.extra.get("survivors") for rec in records]}
    levels = max((len(rec.levels) for rec in records), default=0)
    return RareResult(method, p, float(low), float(min(1.0, high)), confidence, log10_or_none(p),
                      sum(rec.calls for rec in records), levels=levels, certified_below=certified, info=info)


__all__ = ["ALPHA_AGREE", "ChainRecord", "MAX_SCORE_CORRELATION", "MIN_ACCEPT", "agreement", "defensible_upper",
           "finish", "split_repeats"]
