"""Coverage of every rare-event estimator at its validated settings on planted maps with exact answers.

The hard maps are asymmetric (S = max(t, -3 t - 6.16): the bulk on one side at low levels, the tail on the
other) or have three modes of unequal weight; the symmetric linear map and the isotropic sphere are the easy
controls. 100 repeats per (map, p, estimator), each an estimate at the settings the `rare` task uses
(survey.rare.settings), computed as one batch. Asserted, as docs/INTERVALS.md states: no estimator's interval
excludes the exact p in more than 10% of repeats unless its row says it could not resolve the set; at least
one estimator covers >= 90% with median |log10 error| <= 0.15; certificates "P < p_c" at p = p_c are wrong
in <= 5% + noise; splitting and last-particle need >= 100x fewer calls than naive Monte Carlo at p = 1e-6.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy import special

from survey.rare import importance, last_particle, mc, splitting
from survey.rare.coverage import PLANTED, certificates, flagged, measure
from survey.rare.crosscheck import LOST_SHARE, cross_check, lost_modes
from survey.rare.result import RareResult
from survey.rare.exact import Mode, ModeMap, three_mode_map, two_mode_map
from survey.rare.last_particle import certifying_moves, poisson_interval
from survey.rare.modes import count_modes

REPEATS = 100
#: (map, nominal p) -> the estimators measured there; the table in docs/INTERVALS.md has every map and p.
CELLS = {
    ("two-mode d=64", 1e-4): ("splitting", "last-particle", "importance"),
    ("three-mode d=64", 1e-6): ("last-particle", "importance"),
    ("linear (symmetric) d=16", 1e-6): ("splitting", "last-particle"),
    ("linear (symmetric) d=16", 1e-9): ("importance",),
    ("two-mode d=64", 1e-9): ("importance",),
    ("sphere (isotropic) d=16", 1e-3): ("splitting", "last-particle", "importance"),
    ("three-mode d=64", 1e-9): ("splitting", "last-particle", "importance"),
}


@functools.lru_cache(maxsize=None)
def measured(estimator: str, name: str, nominal: float) -> dict:
    return measure(estimator, name, nominal, repeats=REPEATS, seed=1)


# -- the maps themselves (fast) ----------------------------------------------------------------------

def test_two_mode_map_is_the_reviewed_case_and_exact():
    """p = 9.99e-5 at delta = 5 with 99.7% of it on the far side; closed form = quadrature; naive Monte Carlo
    agrees where it can (p ~ 2e-2), in d = 64 and d = 1024."""
    for dim in (64, 1024):
        m = two_mode_map(dim)
        assert m.probability(5.0) == pytest.approx(9.9898e-5, rel=1e-4)
        assert m.probability(5.0) == pytest.approx(m.probability_by_quadrature(5.0), rel=1e-10)
        assert m.shares(5.0)[1] > 0.99 and m.shares(1.0)[0] > 0.9   # the far side: the tail, not the bulk
        delta = m.delta_for(1e-9)
        assert m.probability(delta) == pytest.approx(1e-9, rel=1e-6)
        naive = mc(m.score, dim, 2.0, n=20_000, batch=20_000, generator=torch.Generator().manual_seed(dim))
        assert naive.covers(m.probability(2.0))
    m = two_mode_map(64)
    assert m.probability(5.0) == pytest.approx(special.ndtr(-5.0) + special.ndtr(-11.16 / 3), rel=1e-12)


def test_three_mode_map_unequal_shares_and_exact():
    m = three_mode_map(64)
    for nominal in (1e-3, 1e-6, 1e-9):
        delta = m.delta_for(nominal)
        assert m.probability(delta) == pytest.approx(m.probability_by_quadrature(delta), rel=1e-10)
        shares = m.shares(delta)
        assert abs(sum(shares) - 1) < 1e-12 and max(shares) < 0.95 and sorted(shares)[-2] > 0.05
    naive = mc(m.score, 64, 2.5, n=20_000, batch=20_000, generator=torch.Generator().manual_seed(3))
    assert naive.covers(m.probability(2.5))
    points = m.design_points(m.delta_for(1e-6))
    torch.testing.assert_close(m.score(points.to(torch.float64)), torch.full((3,), m.delta_for(1e-6),
                                                                               dtype=torch.float64))


def test_mode_count_sees_separate_regions_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    axis = torch.zeros(64, dtype=torch.float64)
    axis[5] = 1.0
    noise = torch.randn(120, 64, generator=gen, dtype=torch.float64)
    sides = torch.where(torch.arange(120) < 40, -4.0, 4.0).to(torch.float64)
    assert count_modes(noise + sides[:, None] * axis) == 2
    assert count_modes(noise) == 1
    assert count_modes(noise[:5]) is None


# -- the cross-check against importance sampling's design points ------------------------------------

def _result(method, p, low, high, certified=None, **info):
    return RareResult(method, p, low, high, 0.95, None if p is None else math.log10(p), 100,
                      certified_below=certified, info={"stop": "reached" if certified is None else "stop_below",
                                                       **info})


def test_lost_modes_and_the_cross_check_rules():
    """A mode holding >= LOST_SHARE of p by importance sampling that no run's survivors reached is lost; a smaller
    one is not; the interval becomes the hull; disjoint intervals disagree; an importance result that flagged its
    own modes checks nothing; a certificate stands only where importance sampling's upper end is below it too."""
    axes = torch.eye(8, dtype=torch.float32)
    design = 5.0 * axes[:2]   # two modes, along e0 and e1
    near0 = torch.randn(30, 8, generator=torch.Generator().manual_seed(0)) * 0.3 + design[0]
    assert lost_modes([near0, None], design, [0.5, 0.5]) == [1]
    assert lost_modes([near0], design, [1 - LOST_SHARE / 2, LOST_SHARE / 2]) == []
    assert lost_modes([], design, [0.5, 0.5]) == [0, 1]
    good = dict(design_points=design, mode_shares=[0.2, 0.8], modes_unresolved=False)
    is_result = _result("importance", 1e-6, 0.8e-6, 1.2e-6, **good)
    particle = _result("splitting", 2e-7, 1e-7, 4e-7, survivors=[near0])
    checked = cross_check(particle, is_result)
    assert checked.info["stop"] == "modes_lost" and checked.info["lost_modes"] == [1] and flagged(checked)
    assert (checked.ci_low, checked.ci_high, checked.p, checked.calls) == (1e-7, 1.2e-6, 2e-7, 200)
    both = torch.cat([near0, near0 - design[0] + design[1]])
    disjoint = cross_check(_result("splitting", 2e-7, 1e-7, 4e-7, survivors=[both]), is_result)
    assert disjoint.info["stop"] == "estimators_disagree" and disjoint.ci_high == 1.2e-6
    agree = cross_check(_result("splitting", 1e-6, 5e-7, 2e-6, survivors=[both]), is_result)
    assert agree.info["stop"] == "reached" and (agree.ci_low, agree.ci_high) == (5e-7, 2e-6) and not flagged(agree)
    unresolved = _result("importance", 1e-15, 1e-16, 1.0, design_points=design, mode_shares=[0.5, 0.5],
                         modes_unresolved=True)
    assert cross_check(particle, unresolved).info["stop"] == "reached"
    certificate = _result("splitting", None, 0.0, 5e-7, certified=5e-7)
    contradicted = cross_check(certificate, is_result)
    assert contradicted.info["stop"] == "estimators_disagree" and contradicted.certified_below == 1.2e-6
    assert cross_check(certificate, _result("importance", 1e-7, 5e-8, 2e-7, **good)).info["stop"] == "stop_below"
    straddles = cross_check(certificate, _result("importance", 4e-7, 3e-7, 6e-7, **good))   # IS cannot certify
    assert straddles.info["stop"] == "estimators_disagree" and straddles.certified_below == 6e-7


def test_cross_check_flags_the_mode_every_run_lost_on_the_three_mode_map():
    """The failing case of the between-run check, seeded: on the three-mode map at p = 1e-9, splitting's four runs
    all lost the third mode (84% of p), agreed, and gave a narrow interval that excludes the exact p without a flag
    (the old behaviour). Importance sampling found that mode; the cross-check flags the row and its hull covers."""
    m = three_mode_map(64)
    delta = m.delta_for(1e-9)
    p = m.probability(delta)
    plain = splitting(m.score, 64, delta, generator=torch.Generator().manual_seed(4), n_particles=200,
                      mcmc_steps=10, runs=4, dtype=torch.float32)
    assert plain.info["stop"] == "reached" and not plain.covers(p) and plain.ci_high < p / 2
    design = importance(m.score, 64, delta, generator=torch.Generator().manual_seed(104), dtype=torch.float32)
    assert design.covers(p)
    checked = cross_check(plain, design)
    assert checked.info["stop"] == "modes_lost" and flagged(checked) and checked.covers(p)
    assert checked.info["lost_share"] > 0.5 and checked.calls == plain.calls + design.calls


# -- last-particle: the Poisson count and its certificate ---------------------------------------------

def test_last_particle_count_is_poisson_with_an_exact_interval():
    """One planted half-space (d = 8, p = 1e-3): the pooled count of moves has mean N (-log p) (within 4
    standard errors over 40 repeats) and the exact interval covers >= 85% of repeats."""
    half = ModeMap(8, (Mode(0, 1, 1.0, 0.0),))
    delta = half.delta_for(1e-3)
    p = half.probability(delta)
    results = last_particle(half.score, 8, delta, generator=torch.Generator().manual_seed(2), n_particles=100,
                            runs=4, repeats=40)
    moves = np.array([r.info["moves"] for r in results])
    expected = -400 * math.log(p)
    assert abs(moves.mean() - expected) < 4 * math.sqrt(expected / 40)
    assert np.mean([r.covers(p) for r in results]) >= 0.85
    assert all(r.calls == 400 + 10 * r.info["moves"] for r in results)   # N per run, then T per move
    low, high = poisson_interval(int(expected), 400, 0.95)
    assert low < p < high
    m_c = certifying_moves(400, 1e-4, 0.95)
    assert m_c > -400 * math.log(1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["splitting", "last-particle"])
def test_certificate_at_p_c_is_wrong_in_at_most_5_percent(estimator):
    """On the two-mode map at exact p = p_c = 1e-3 the certificate 'P < p_c' is wrong whenever it is given:
    <= 5% + noise of 100 repeats (10%)."""
    model = PLANTED["two-mode d=64"]()
    delta = model.delta_for(1e-3)
    gen = torch.Generator().manual_seed(4)
    run = splitting if estimator == "splitting" else last_particle
    results = run(model.score, model.dim, delta, generator=gen, stop_below=1e-3, repeats=REPEATS,
                  dtype=torch.float32)
    wrong = np.mean([r.info["stop"] == "stop_below" and r.certified_below <= 1e-3 for r in results])
    print(f"\n{estimator} on the two-mode map: certificate wrong in {wrong:.2f}")
    assert wrong <= 0.10


@pytest.mark.slow
def test_certificates_on_the_three_mode_map_hold_with_the_cross_check():
    """At exact p = p_c = 1e-9 on the three-mode map, last-particle's runs that all lost the third mode certified
    'P < p_c' in 14% of 100 repeats; with the cross-check (a certificate stands only where importance sampling's
    upper end is below p_c too) it is wrong in <= 5% + noise."""
    row = certificates("last-particle", "three-mode d=64", 1e-9, repeats=REPEATS)
    print(f"\nlast-particle certificates on the three-mode map at p = p_c: wrong {row['wrong']:.2f} "
          f"(unchecked {row['wrong_unchecked']:.2f})")
    assert row["wrong_unchecked"] > 0.10 and row["wrong"] <= 0.10


# -- coverage on every cell ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name,nominal", list(CELLS))
def test_no_confident_wrong_interval_and_one_estimator_resolves(name, nominal):
    rows = [measured(e, name, nominal) for e in CELLS[(name, nominal)]]
    for r in rows:
        print(f"\n{r['estimator']} on {name} p={r['p']:.2e}: coverage {r['coverage']:.2f}, excluded unflagged "
              f"{r['excluded_unflagged']:.2f}, flagged {r['flagged']:.2f}, median |log10 err| "
              f"{r['median_log10_error']:.3f}, calls {r['calls']:.0f}")
        assert r["excluded_unflagged"] <= 0.10, r
    if not name.startswith("sphere"):   # importance is flagged there and splitting's job is coverage
        assert any(r["coverage"] >= 0.90 and r["median_log10_error"] <= 0.15 for r in rows), rows


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["splitting", "last-particle"])
def test_efficiency_against_naive_mc_at_1e_6(estimator):
    """Naive Monte Carlo needs N_mc = (1 - p) / (p e^2) calls for the relative error e the estimator reached."""
    r = measured(estimator, "linear (symmetric) d=16", 1e-6)
    n_mc = (1 - r["p"]) / (r["p"] * r["relative_rmse"] ** 2)
    print(f"\n{estimator}: relative RMS error {r['relative_rmse']:.3f} with {r['calls']:.0f} calls; naive MC "
          f"{n_mc:.3g}: {n_mc / r['calls']:.0f}x")
    assert n_mc / r["calls"] >= 100
