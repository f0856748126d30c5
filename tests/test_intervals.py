"""survey.analysis.intervals and .decisions, validated by simulation against a known population of images.

Per-image P(bad) p_i ~ Beta(p c, (1 - p) c), intra-image correlation rho = 1 / (c + 1): rho = 0, every image
has p_i = p (draws independent); rho = 1, each image is all-bad with probability p. The population value is p,
the mean over images of p_i. 1000 repetitions per setting, vectorised (one group per repetition).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from survey.analysis.decisions import decide, holm
from survey.analysis.intervals import (clopper_pearson, cluster_exact, cluster_exact_upper, design_n, effective_upper,
                                       image_moments, p_value)

REPS = 1000
P_VALUES = (0.0, 1e-3, 1e-2, 0.05, 0.2, 0.5, 1.0)
RHOS = (0.0, 0.01, 0.1, 0.5, 1.0)


def _counts(rng, reps: int, m: int, draws, p: float, rho: float) -> np.ndarray:
    """(reps, m) bad counts; draws: per-image draws (int or (m,) array)."""
    if p in (0.0, 1.0) or rho == 0:
        p_image = np.full((reps, m), p)
    elif rho == 1:
        p_image = (rng.random((reps, m)) < p).astype(np.float64)
    else:
        c = 1 / rho - 1
        p_image = rng.beta(p * c, (1 - p) * c, size=(reps, m))
    return rng.binomial(draws, p_image)


def _primary(k: np.ndarray, draws, confidence: float = 0.95):
    reps, m = k.shape
    n = np.broadcast_to(np.asarray(draws), k.shape).ravel()
    mo = image_moments(k.ravel(), n, np.repeat(np.arange(reps), m))
    low, high, _ = cluster_exact(mo["mean"], mo["var_mean"], mo["m"], mo["n_indep"], mo["df"], confidence)
    return low, high


def _covers(low, high, p: float) -> float:
    return float(np.mean((low <= p + 1e-12) & (p - 1e-12 <= high)))


@pytest.mark.parametrize("m", [10, 20, 48])
def test_primary_interval_covers_the_population_of_images(m: int):
    rng = np.random.default_rng(m)
    floor = 0.90 if m < 20 else 0.93
    worst = {}
    for p in P_VALUES:
        for rho in ((0.0,) if p in (0.0, 1.0) else RHOS):
            draws = 100 if p != 0.05 else rng.integers(20, 200, size=m)     # one setting with unequal draws
            low, high = _primary(_counts(rng, REPS, m, draws, p, rho), draws)
            worst[(p, rho)] = _covers(low, high, p)
    assert min(worst.values()) >= floor, {k: v for k, v in worst.items() if v < floor}


def test_pooled_clopper_pearson_fails_when_images_differ():
    """The old interval: every draw an independent trial. Once images differ it covers far below 95%."""
    rng = np.random.default_rng(1)
    for m in (10, 20, 48):
        for p in (0.05, 0.2, 0.5):
            for rho in (0.1, 0.5):
                k = _counts(rng, REPS, m, 100, p, rho)
                pooled = _covers(*clopper_pearson(k.sum(axis=1), m * 100), p)
                assert pooled < 0.6, (m, p, rho, pooled)
                assert _covers(*_primary(k, 100), p) >= 0.93, (m, p, rho)


def test_forty_groups_of_ten_images_as_measured():
    """The measured fact: 40 groups of 10 images, per-image P(bad) from 0 to ~0.4, 200 draws each: pooled
    Clopper-Pearson held the population value in ~22 of 40; the primary interval at about the nominal rate."""
    rng = np.random.default_rng(2024)
    for reps in (40, REPS):
        k = rng.binomial(200, rng.uniform(0.0, 0.4, size=(reps, 10)))
        pooled = _covers(*clopper_pearson(k.sum(axis=1), 2000), 0.2)
        primary = _covers(*_primary(k, 200), 0.2)
        assert pooled < 0.75, pooled              # clearly below nominal (about 0.55)
        assert primary >= (0.9 if reps == 40 else 0.93), primary


def test_exact_in_both_limits():
    m, draws = 48, 100
    # every image all-good / all-bad: the image-level exact bound, not 4,800 independent draws' 0.9994
    for k_i, (low, high) in ((0, (0.0, 1 - 0.05 ** (1 / m))), (draws, (0.05 ** (1 / m), 1.0))):
        k = np.full((1, m), k_i)
        got = _primary(k, draws)
        assert float(got[0][0]) == pytest.approx(low) and float(got[1][0]) == pytest.approx(high)
    # the number the docs quote: no bad draw on 48 images bounds the mean per-image P(bad) by 0.0605
    assert float(_primary(np.zeros((1, 48)), draws)[1][0]) == pytest.approx(0.0605, abs=1e-4)
    # all-or-nothing images: Clopper-Pearson on the images
    k = np.zeros((1, m))
    k[0, :7] = draws
    cp = clopper_pearson(7, m)
    np.testing.assert_allclose(np.ravel(_primary(k, draws)), np.ravel(cp), rtol=1e-9)
    # images that do not differ (one independent draw per row, p_i = p): close to Clopper-Pearson on all rows
    rng = np.random.default_rng(0)
    k = _counts(rng, 2000, m, draws, 0.2, 0.0)
    low, high = _primary(k, draws)
    cp_low, cp_high = clopper_pearson(k.sum(axis=1), m * draws)
    assert 1.0 <= np.mean(high - low) / np.mean(cp_high - cp_low) < 1.1


def test_upper_bound_p_value_and_stored_fields_agree():
    rng = np.random.default_rng(3)
    k = _counts(rng, 200, 20, 100, 0.05, 0.1)
    mo = image_moments(k.ravel(), np.full(k.size, 100), np.repeat(np.arange(200), 20))
    n_eff = design_n(mo["mean"], mo["var_mean"], mo["m"], mo["n_indep"])
    for conf in (0.9, 0.95, 0.999):
        direct = cluster_exact_upper(mo["mean"], mo["var_mean"], mo["m"], mo["n_indep"], mo["df"], conf)
        np.testing.assert_allclose(effective_upper(mo["mean"], n_eff, mo["df"], mo["m"], conf), direct, rtol=1e-9)
    # the p-value is the alpha at which the bound reaches the limit
    limit = 0.08
    pv = p_value(mo["mean"], n_eff, mo["df"], mo["m"], limit)
    inside = (pv > 1e-6) & (pv < 0.5)
    bound = effective_upper(mo["mean"][inside], n_eff[inside], mo["df"][inside], mo["m"][inside], 1 - pv[inside])
    np.testing.assert_allclose(bound, limit, rtol=1e-6)
    # independent rows: the exact binomial p-value P(K <= k | n, limit)
    assert float(p_value(3 / 200, 200, None, 200, 0.05)) == pytest.approx(stats.binom.cdf(3, 200, 0.05), rel=1e-6)


def test_holm_matches_the_textbook_example():
    adjusted, rejected = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert rejected.tolist() == [True, False, False, True]


def _row(k: int, n: int, group: str, confidence: float = 0.95) -> dict:
    """A primary Clopper-Pearson estimate row as `estimate` gives it for n independent rows."""
    return {"network": group, "n": n, "k": k, "p": k / n, "method": "clopper-pearson", "primary": True,
            "point": k / n, "n_eff": float(n), "df": None, "clusters": n, "confidence": confidence,
            "estimand": "over rows", "ci_low": 0.0, "ci_high": 1.0}


def test_decisions_use_one_sided_bounds_and_holm():
    # 1 bad in 100, a limit between the one-sided 95% bound (0.047) and the two-sided 95% upper end (0.054):
    # judged on the one-sided bound, as stated, it passes
    one_sided = float(effective_upper(1 / 100, 100, None, 100, 0.95))
    two_sided_high = float(clopper_pearson(1, 100, 0.95)[1])
    assert one_sided < two_sided_high
    limit = (one_sided + two_sided_high) / 2
    [d] = decide([{"name": "c", "limit": limit, "rows": [_row(1, 100, "a")]}], correction="none")
    assert d["passed_raw"] and d["passed"] and d["upper_bound"] == pytest.approx(one_sided)
    assert d["group"] == {"network": "a"} and d["level"] == 0.95
    # 24 decisions (4 criteria x 6 groups), each with p-value just under alpha: each passes alone, not as a family
    rows = [_row(0, 100, f"g{g}") for g in range(6)]
    limit = 1 - 0.05 ** (1 / 100) + 1e-4            # just above the one-sided bound at k = 0
    criteria = [{"name": f"c{i}", "limit": limit, "rows": rows, "confidence": 0.95} for i in range(4)]
    family = decide(criteria)
    alone = decide(criteria, correction="none")
    assert len(family) == len(alone) == 24 and family[0]["family_size"] == 24
    assert all(d["passed_raw"] for d in family) and all(d["passed"] for d in alone)
    assert not any(d["passed"] for d in family)
    assert max(d["level"] for d in family) == pytest.approx(1 - 0.05 / 24)     # Holm's first step: Bonferroni
    assert all(d["level"] >= 0.95 and d["upper_adjusted"] >= d["upper_bound"] for d in family)
    # a clear pass survives the correction
    clear = decide([{"name": "c", "limit": 0.2, "rows": rows}, *criteria])
    assert sum(d["passed"] for d in clear) == 6
    with pytest.raises(ValueError, match="correction"):
        decide(criteria, correction="bonferroni-ish")
    with pytest.raises(ValueError, match="different confidences"):
        decide([{**criteria[0], "confidence": 0.9}, criteria[1]])
