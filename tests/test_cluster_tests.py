"""Cluster-valid tests and intervals for insertions and detectors, by simulation with known truth and clustered
draws at 4, 8 and 20 clusters (images), each a second or two.

- `clustered_paired` (insertions: network vs reference on the same placements): per-cluster differences with a
  cluster-level effect that favours either method in each cluster (mean 0): the exact sign-flip test keeps its
  level, the plain McNemar (placements as independent pairs) rejects about a quarter of the time; the t interval
  (the whole [-1, 1] with K <= 5) covers the population difference 0.
- `clustered_auc` (detectors, Obuchowski 1997): a shared per-image offset in positive and negative scores; the
  interval covers the expected AUC of the design; the percentile image bootstrap it replaces undercovers with 4
  images; the within-image permutation test keeps its level at AUC = 1/2.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from survey.analysis.detection import bootstrap_by_image, clustered_auc, roc_auc, within_cluster_permutation_p
from survey.analysis.paired_tests import clustered_paired, obuchowski_mcnemar

REPS = 400
SLACK = 3 * math.sqrt(0.05 * 0.95 / REPS)   # three binomial standard errors at 5%


def _clustered_pairs(rng, K, per=6):
    q = rng.beta(2, 2, K)
    e = rng.choice([-1.0, 1.0], K) * 0.3   # a cluster-level advantage for one method or the other, mean 0
    a = rng.random((K, per)) < np.clip(q + e, 0, 1)[:, None]
    b = rng.random((K, per)) < np.clip(q - e, 0, 1)[:, None]
    return a.ravel(), b.ravel(), np.repeat(np.arange(K), per)


@pytest.mark.parametrize("K", [4, 8, 20])
def test_clustered_paired_keeps_its_level_where_the_plain_mcnemar_does_not(K):
    rng = np.random.default_rng(K)
    found = [clustered_paired(*_clustered_pairs(rng, K)) for _ in range(REPS)]
    sign_flip = np.mean([f.p_sign_flip <= 0.05 for f in found])
    pooled = np.mean([f.p_pooled <= 0.05 for f in found])
    cover = np.mean([f.ci_low <= 0.0 <= f.ci_high for f in found])
    assert sign_flip <= 0.05 + SLACK, sign_flip
    assert pooled > 0.15, pooled        # the per-placement test is not valid for clustered placements
    assert cover >= 0.95 - SLACK, cover
    if K <= 5:
        assert all((f.ci_low, f.ci_high) == (-1.0, 1.0) for f in found)


def test_clustered_paired_and_obuchowski_against_hand_counts():
    # two clusters: cluster 0 has 3 placements recovered by the first method only, cluster 1 one by the second
    first = [True, True, True, False, False, True]
    second = [False, False, False, False, True, True]
    found = clustered_paired(first, second, [0, 0, 0, 1, 1, 1])
    assert (found.b, found.c, found.clusters, found.pairs) == (3, 1, 2, 6)
    assert found.difference == pytest.approx(((1 - 0) + (1 / 3 - 2 / 3)) / 2)
    # d = (3, -1): X^2 = 2^2 / (2 * ((3 - 1)^2 + (-1 - 1)^2)) = 4 / 16
    assert obuchowski_mcnemar([3, 0], [0, 1]) == pytest.approx(stats.chi2.sf(0.25, 1))
    assert found.p_sign_flip == 1.0 and found.min_p == 0.5


def _clustered_scores(rng, K, per, delta, tau):
    u = rng.normal(0, tau, K)
    pos = (u[:, None] + delta + rng.normal(size=(K, per))).ravel()
    neg = (u[:, None] + rng.normal(size=(K, per))).ravel()
    return pos, neg, np.repeat(np.arange(K), per)


@pytest.mark.parametrize("K", [4, 8, 20])
def test_clustered_auc_covers_where_the_image_bootstrap_does_not(K):
    rng = np.random.default_rng(100 + K)
    delta, tau, per = 1.0, 1.0, 1
    # the design's expected AUC: same-image pairs (1/K of them) compare without the image offset
    truth = (stats.norm.cdf(delta / math.sqrt(2)) / K
             + (1 - 1 / K) * stats.norm.cdf(delta / math.sqrt(2 + 2 * tau**2)))
    hits = boot_hits = 0
    for r in range(REPS):
        pos, neg, k = _clustered_scores(rng, K, per, delta, tau)
        found = clustered_auc(pos, k, neg, k)
        assert 0.0 <= found["low"] <= found["auc"] <= found["high"] <= 1.0
        hits += found["low"] <= truth <= found["high"]
        if K == 4 and r < 150:
            frame_p = pd.DataFrame({"s": pos, "image_key": k})
            frame_n = pd.DataFrame({"s": neg, "image_key": k})
            _, low, high = bootstrap_by_image(frame_p, frame_n, "s", roc_auc, n_boot=200, seed=r)
            boot_hits += low <= truth <= high
    assert hits / REPS >= 0.95 - SLACK, hits / REPS
    if K == 4:
        assert boot_hits / 150 < 0.9, boot_hits / 150


@pytest.mark.parametrize("K", [4, 8, 20])
def test_within_image_permutation_test_of_chance_keeps_its_level(K):
    rng = np.random.default_rng(200 + K)
    rejected = 0
    for r in range(200):
        pos, neg, k = _clustered_scores(rng, K, 2, 0.0, 1.5)
        rejected += within_cluster_permutation_p(pos, k, neg, k, n_perm=200, seed=r) <= 0.05
    assert rejected / 200 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 200)


def test_bounded_difference_interval_is_never_narrower_than_the_data_allow():
    from survey.analysis.paired_tests import bounded_difference_interval

    assert bounded_difference_interval(np.ones(4)) == (-1.0, 1.0)          # 4 clusters exclude nothing
    low, high = bounded_difference_interval(np.ones(6))                     # no spread: exact, not zero width
    assert high == 1.0 and low == pytest.approx(2 * 0.025 ** (1 / 6) - 1)
    d = np.array([0.2, -0.1, 0.4, 0.0, 0.3, 0.1, 0.25, -0.05])
    half = stats.t.ppf(0.975, 7) * d.std(ddof=1) / math.sqrt(8)
    assert bounded_difference_interval(d) == pytest.approx((d.mean() - half, d.mean() + half))
