"""Three-valued verdicts: PASS (upper bound below the limit), FAIL (lower bound above: evidence of harm),
INCONCLUSIVE (too few clusters), each with the clusters that would decide it; `plan_size` against brute force;
`survey plan-size`; the verdict error rates by simulation at 4, 8 and 20 images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from survey.analysis.decisions import clusters_to_decide, decide, plan_size
from survey.analysis.intervals import beta_bounds, effective_lower, effective_upper
from survey.cli import app


def _row(k, n, clusters=None, df=None, point=None, n_eff=None, name="g"):
    """A primary estimate row: Clopper-Pearson (df None) on k of n, or cluster-exact with the given numbers."""
    return {"group": name, "primary": True, "method": "clopper-pearson" if df is None else "cluster-exact",
            "point": k / n if point is None else point, "n_eff": float(n if n_eff is None else n_eff), "df": df,
            "clusters": clusters or n, "estimand": "e", "unit": "image", "n": n, "k": k}


def test_pass_fail_and_inconclusive_with_the_images_that_would_decide():
    criteria = [{"name": "none of 4", "limit": 0.05, "rows": [_row(0, 4)]},
                {"name": "none of 100", "limit": 0.05, "rows": [_row(0, 100)]},
                {"name": "all of 4", "limit": 0.05, "rows": [_row(4, 4)]}]
    found = {d["criterion"]: d for d in decide(criteria, correction="none")}
    assert found["none of 4"]["verdict"] == "INCONCLUSIVE"
    assert found["none of 4"]["upper_bound"] == pytest.approx(1 - 0.05 ** 0.25)   # 0.53: cannot pass, not harm
    assert found["none of 4"]["decide_clusters"] == math.ceil(math.log(0.05) / math.log(0.95)) == 59
    assert found["none of 4"]["decide_more"] == 55
    assert found["none of 100"]["verdict"] == "PASS" and found["none of 100"]["decide_more"] == 0
    assert found["all of 4"]["verdict"] == "FAIL" and found["all of 4"]["lower_bound"] == pytest.approx(0.05 ** 0.25)
    # a point exactly at the limit: no sample decides it
    (at,) = decide([{"name": "at", "limit": 0.25, "rows": [_row(1, 4)]}], correction="none")
    assert at["verdict"] == "INCONCLUSIVE" and at["decide_clusters"] is None
    # Holm over the three: FAIL needs the harm tests' Holm too
    holm = {d["criterion"]: d for d in decide(criteria)}
    assert holm["all of 4"]["verdict"] == "FAIL" and holm["none of 100"]["verdict"] == "PASS"


def test_clusters_to_decide_is_the_smallest_deciding_sample():
    point, limit = np.array([0.0, 0.02, 0.2, 0.1]), np.array([0.05, 0.05, 0.05, 0.3])
    n_eff, df, m = np.array([6.0, 50.0, 10.0, 8.0]), np.array([np.nan, np.nan, 3.0, 2.0]), np.array([6, 50, 10, 8.0])
    need = clusters_to_decide(point, n_eff, df, m, limit, 0.95)
    for i, c in enumerate(need):
        def bound(clusters):
            ratio = clusters / m[i]
            n, d = n_eff[i] * ratio, (df[i] + 1) * ratio - 1 if np.isfinite(df[i]) else np.nan
            side = effective_upper if point[i] < limit[i] else effective_lower
            return float(side(point[i], n, max(d, 1) if np.isfinite(d) else d, clusters, 0.95))
        decided = (lambda b: b < limit[i]) if point[i] < limit[i] else (lambda b: b > limit[i])
        assert decided(bound(c)) and not decided(bound(c - 1)), (i, c)


@pytest.mark.parametrize("limit, rate, power", [(0.05, 0.0, None), (0.1, 0.02, None), (0.1, 0.02, 0.8),
                                                (0.2, 0.05, 0.9)])
def test_plan_size_against_brute_force(limit, rate, power):
    plan = plan_size(limit, rate, power=power)

    def passes(m):   # exact: P(CP upper bound of Binomial(m, rate) < limit), or the rate's own bound
        k = np.arange(m + 1)
        ok = beta_bounds(k, m, 0.05, 0.05)[1] < limit
        if power is None:
            return math.floor(rate * m + 1e-9) <= (k[ok].max() if ok.any() else -1) and \
                (rate == 0 or float(effective_upper(rate, m, np.nan, m, 0.95)) < limit)
        return float(stats.binom.pmf(k[ok], m, rate).sum()) >= power

    m = plan["clusters"]
    assert passes(m) and not any(passes(j) for j in range(1, m))
    if power is not None:
        assert plan["achieved_power"] >= power


def test_plan_size_cli_and_bad_input():
    runner = CliRunner()
    ok = runner.invoke(app, ["plan-size", "--limit", "0.05", "--rate", "0.01", "--power", "0.8", "--unit", "volume"])
    assert ok.exit_code == 0 and ok.output.startswith("124 volumes pass"), ok.output
    bad = runner.invoke(app, ["plan-size", "--limit", "0.05", "--rate", "0.05"])
    assert bad.exit_code == 2 and "never passes" in bad.stderr


@pytest.mark.parametrize("m", [4, 8, 20])
def test_verdicts_are_wrong_at_most_at_the_stated_rate(m):
    """Images all-or-nothing with P(bad) = limit exactly (the worst case for both errors): a wrong PASS and a
    wrong FAIL each in <= 5% + noise of 1000 studies (exact Clopper-Pearson on images, one decision each)."""
    rng = np.random.default_rng(m)
    limit = 0.2
    k = rng.binomial(m, limit, size=1000)
    criteria = [{"name": str(i), "limit": limit, "rows": [_row(int(x), m, name=str(i))]} for i, x in enumerate(k)]
    found = [d["verdict"] for d in decide(criteria, correction="none")]   # one vectorised call, each judged alone
    slack = 3 * math.sqrt(0.05 * 0.95 / len(found))
    assert np.mean([v == "PASS" for v in found]) <= 0.05 + slack
    assert np.mean([v == "FAIL" for v in found]) <= 0.05 + slack
