"""Rare-event estimators against exact answers: planted linear and gated maps, the identity network.

The coverage over repeats on every planted map (multi-mode ones included) is tests/test_rare_coverage.py.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from survey.perturb import make_family
from survey.physics import make_physics
from survey.rare import importance, mc, patch_change, perturbation_score, relative_l2, splitting
from survey.rare.exact import GatedMap, LinearMap, quadratic_exceedance, quadratic_exceedance_by_q

DIM = 64
MODELS = {"linear": LinearMap(DIM, gain=4.0, seed=0), "gated": GatedMap(DIM, gain=4.0, kappa=2.0, center=1.0, seed=0)}
#: Thresholds with P(S >= delta) close to 1e-3, 1e-6, 1e-9 (the exact p is recomputed for each).
DELTAS = {"linear": {1e-3: 15.4434, 1e-6: 21.1659, 1e-9: 25.7354},
          "gated": {1e-3: 12.6183, 1e-6: 18.2696, 1e-9: 22.9762}}
SPLITTING = dict(n_particles=200, p0=0.2, mcmc_steps=10)
IMPORTANCE = dict(n=2000)


@functools.lru_cache(maxsize=None)
def exact(model: str, nominal: float) -> float:
    return MODELS[model].probability(DELTAS[model][nominal])


def run(method: str, model: str, nominal: float, seed: int):
    m = MODELS[model]
    gen = torch.Generator().manual_seed(seed)
    if method == "splitting":
        return splitting(m.score, m.dim, DELTAS[model][nominal], generator=gen, **SPLITTING)
    return importance(m.score, m.dim, DELTAS[model][nominal], generator=gen, **IMPORTANCE)


# -- the exact answers themselves -------------------------------------------------------------------

@pytest.mark.parametrize("dof", [1, 63, 4095])
def test_exact_reduces_to_chi_square(dof):
    """K = 1: ||z||^2 ~ chi2(d); K -> the 1-D Gaussian tail when there is no chi-square part."""
    for q in (1e-2, 1e-6, 1e-12):
        r2 = float(stats.chi2.isf(q, dof + 1))
        assert quadratic_exceedance(r2, 1.0, dof) == pytest.approx(special.chdtrc(dof + 1, r2), rel=1e-11)
    for k in (0.5, 3.0):
        assert quadratic_exceedance(49.0, k, 0) == pytest.approx(2 * special.ndtr(-7.0 / k), rel=1e-14)


@pytest.mark.parametrize("dof,k", [(63, 4.0), (255, 2.0), (4095, 3.0)])
def test_exact_two_quadratures_agree(dof, k):
    """Integrating over the gained coordinate or over the chi-square part gives the same p to 1e-10."""
    for q in (1e-3, 1e-9, 1e-15):
        r2 = float(stats.chi2.isf(q, dof + 1))  # p is above q: the gain adds to the tail
        a, b = quadratic_exceedance(r2, k, dof), quadratic_exceedance_by_q(r2, k, dof)
        assert 0 < a < 1
        assert a == pytest.approx(b, rel=1e-10)


def test_linear_map_at_image_size():
    """The exact function handles d = 64 * 64 (a 64 x 64 latent) at tiny p."""
    m = LinearMap(64 * 64, gain=3.0, sigma=0.01, x0_norm=1.0)
    delta = 0.01 * math.sqrt(4096 + 8 * math.sqrt(2 * 4096))
    p = m.probability(delta)
    assert 1e-16 < p < 1e-3
    assert p == pytest.approx(quadratic_exceedance_by_q(m.r2(delta), 3.0, 4095), rel=1e-10)
    z = torch.randn(5, 4096, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert m.score(z).shape == (5,)


def test_gated_map_exact():
    """Gate always on: the linear map; gate off: the chi-square; and naive Monte Carlo at p ~ 1e-2."""
    on = GatedMap(DIM, gain=4.0, kappa=1.0, center=-1e4)
    off = GatedMap(DIM, gain=4.0, kappa=1.0, center=1e4)
    assert on.probability(14.0) == pytest.approx(quadratic_exceedance(196.0, 4.0, DIM - 1), rel=1e-9)
    assert off.probability(10.0) == pytest.approx(special.chdtrc(DIM, 100.0), rel=1e-9)
    gated = MODELS["gated"]
    p = gated.probability(10.5)
    assert 3e-3 < p < 3e-2
    result = mc(gated.score, DIM, 10.5, n=100_000, batch=50_000, generator=torch.Generator().manual_seed(1))
    assert result.covers(p), (result, p)


# -- naive Monte Carlo -------------------------------------------------------------------------------

def test_mc_clopper_pearson():
    """A score that is always (never) bad, and the exact binomial interval."""
    gen = torch.Generator().manual_seed(0)
    never = mc(lambda z: torch.zeros(z.shape[0]), 4, 1.0, n=1000, generator=gen)
    assert never.p == 0 and never.ci_low == 0 and never.log10_p is None
    assert never.ci_high == pytest.approx(1 - 0.025 ** (1 / 1000))
    always = mc(lambda z: torch.ones(z.shape[0]), 4, 1.0, n=10, batch=3, generator=gen)
    assert always.p == 1 and always.ci_high == 1 and always.calls == 10
    half = mc(lambda z: z[:, 0], 4, 0.0, n=4000, generator=gen)
    assert half.covers(0.5) and half.info["hits"] == round(half.p * 4000)


# -- splitting and importance against naive Monte Carlo ---------------------------------------------

@pytest.mark.parametrize("model", ["linear", "gated"])
def test_agree_with_mc_at_1e_3(model):
    """Where naive Monte Carlo is affordable (p = 1e-3), the intervals overlap with its exact one."""
    m = MODELS[model]
    delta = DELTAS[model][1e-3]
    naive = mc(m.score, DIM, delta, n=200_000, batch=50_000, generator=torch.Generator().manual_seed(5))
    assert naive.covers(exact(model, 1e-3))
    for method in ("splitting", "importance"):
        result = run(method, model, 1e-3, 77)
        assert result.ci_low <= naive.ci_high and naive.ci_low <= result.ci_high, (method, result, naive)


def test_certification_bounds_the_last_level():
    """With a level budget too small to reach delta, `certified_below` (the largest bound over the runs) bounds
    min over runs of P(S > the run's last level) >= P(S >= delta) from above in >= 90% of estimates (an exact
    check on the linear map)."""
    m = MODELS["linear"]
    delta = DELTAS["linear"][1e-9]
    p = exact("linear", 1e-9)
    results = splitting(m.score, DIM, delta, generator=torch.Generator().manual_seed(0), n_particles=200,
                        max_levels=3, runs=2, repeats=40)
    held = []
    for result in results:
        assert result.p is None and result.log10_p is None and result.levels == 3
        assert result.certified_below == result.ci_high and result.certified_below > p
        held.append(min(m.probability(levels[-1]) for levels in result.info["level_values"]) <= result.certified_below)
    assert np.mean(held) >= 0.9
    stopped = splitting(m.score, DIM, delta, generator=torch.Generator().manual_seed(0), n_particles=200,
                        stop_below=1e-4)
    assert stopped.p is None and stopped.certified_below < 1e-4 and stopped.info["stop"] == "stop_below"
    assert stopped.levels < 12


def test_importance_flags_an_isotropic_failure_set():
    """S(z) = ||z|| (the identity under white noise): every direction fails alike, each restart finds its own
    design point and the mixture misses almost all of the set (p_hat ~ 1e-17 against an exact 1e-6). The
    restarts' Good-Turing count flags it: the upper end is 1, so the interval still holds the exact p (the
    first version's did not), and `unseen_modes` says why. A one-direction failure set is not flagged."""
    delta = math.sqrt(float(stats.chi2.isf(1e-6, DIM)))
    result = importance(lambda z: z.norm(dim=1), DIM, delta, generator=torch.Generator().manual_seed(0),
                        n=2000, restarts=32)
    assert result.info["modes_unresolved"] and result.info["unseen_modes"] > 0.9
    assert result.p < 1e-9 and result.ci_high == 1.0 and result.covers(1e-6)
    linear = run("importance", "linear", 1e-6, 3)
    assert not linear.info["modes_unresolved"] and linear.info["unseen_modes"] <= 0.25 and linear.ci_high < 1e-5


def test_importance_needs_a_gradient():
    with pytest.raises(ValueError, match="differentiable"):
        importance(lambda z: (z.detach() ** 2).sum(1), 4, 3.0, generator=torch.Generator().manual_seed(0))


def test_identity_network_end_to_end():
    """The control: the identity on denoising with Gaussian noise, S(z) = sigma ||z|| / ||x||, so
    P(S >= delta) = chi2sf((delta ||x|| / sigma)^2; d) exactly; splitting through `perturbation_score`."""
    physics = make_physics("denoise", size=8)
    family = make_family("gaussian")
    x = torch.rand((1, 1, 8, 8), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = physics.A(x)
    sigma = 0.05
    score = perturbation_score(lambda u, phys: u, physics, y, family, sigma, batch=256)
    dim = family.latent_shape(physics)[0]
    assert dim == 64
    r2 = float(stats.chi2.isf(1e-6, dim))
    delta = math.sqrt(r2) * sigma / float(x.norm())
    p = special.chdtrc(dim, r2)
    result = splitting(score, dim, delta, generator=torch.Generator().manual_seed(3))
    assert result.covers(p), (result, p)
    assert abs(result.log10_p - math.log10(p)) < 0.3


# -- distances -----------------------------------------------------------------------------------------

def test_distances():
    ref = torch.ones((2, 1, 32, 32), dtype=torch.float64)
    spread = ref + 0.1
    torch.testing.assert_close(relative_l2(spread, ref), torch.full((2,), 0.1, dtype=torch.float64))
    torch.testing.assert_close(patch_change(spread, ref), torch.full((2,), 0.1, dtype=torch.float64))
    local = ref.clone()
    local[:, :, 8:16, 4:12] += 0.1  # one 8 x 8 patch
    torch.testing.assert_close(patch_change(local, ref), 4 * relative_l2(local, ref))  # sqrt(32^2 / 8^2)
    torch.testing.assert_close(patch_change(local, ref), torch.full((2,), 0.1, dtype=torch.float64))
    assert float(patch_change(ref, ref).abs().max()) == 0
    complex_ref = ref.to(torch.complex128) * 1j
    torch.testing.assert_close(relative_l2(complex_ref * 1.1, complex_ref), torch.full((2,), 0.1, dtype=torch.float64))


# -- threads -------------------------------------------------------------------------------------------

def test_moves_keep_bookkeeping_on_one_thread_the_network_on_the_callers_and_the_same_numbers(monkeypatch):
    """The moves' and the score's small operations run on one CPU thread, the network on the caller's count,
    restored afterwards; the estimate is bit for bit the one computed without the switch."""
    import contextlib

    import survey.rare.particles as particles
    import survey.rare.score as score_module

    physics = make_physics("denoise", size=8)
    family = make_family("gaussian")
    x = torch.rand((1, 1, 8, 8), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    seen = {"network": set(), "distance": set()}

    def net(u, phys):
        seen["network"].add(torch.get_num_threads())
        return u

    def distance(out, ref):
        seen["distance"].add(torch.get_num_threads())
        return relative_l2(out, ref)

    delta = math.sqrt(float(stats.chi2.isf(1e-3, 64))) * 0.05 / float(x.norm())   # p = 1e-3: a few levels

    def estimate():
        score = perturbation_score(net, physics, physics.A(x), family, 0.05, batch=32, distance=distance)
        return splitting(score, 64, delta, generator=torch.Generator().manual_seed(3), n_particles=20, mcmc_steps=2,
                         runs=2)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        switched = estimate()
        assert torch.get_num_threads() == 2
        assert seen == {"network": {2}, "distance": {1}}
        for module in (particles, score_module):
            monkeypatch.setattr(module, "bookkeeping", contextlib.nullcontext)
            monkeypatch.setattr(module, "network", contextlib.nullcontext)
        plain = estimate()
    finally:
        torch.set_num_threads(threads)
    assert switched.levels > 0 and switched.calls == plain.calls
    assert (switched.p, switched.ci_low, switched.ci_high) == (plain.p, plain.ci_low, plain.ci_high)
    assert switched.info["accept"] == plain.info["accept"]
