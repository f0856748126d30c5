"""McNemar's exact test against textbook values and its edge cases."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from survey.analysis.paired_tests import mcnemar, mcnemar_exact


def test_textbook_example():
    # Agresti, Categorical Data Analysis (2nd ed.), Table 10.1 (presidential approval, 1600 people):
    # discordant cells 150 and 86. The exact two-sided binomial p is about 3.8e-5 (chi-square 17.36, p 3.1e-5).
    assert mcnemar_exact(150, 86) == pytest.approx(binomtest(86, 236, 0.5).pvalue, rel=1e-9)
    assert 3e-5 < mcnemar_exact(150, 86) < 5e-5
    # a small case by hand: b = 1, c = 6: 2 * (1 + 7) / 2^7 = 0.125
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)


def test_paired_outcomes_and_edges():
    net = [True, False, False, True, False, False, True]
    ref = [True, True, True, True, True, False, False]
    result = mcnemar(net, ref)
    assert (result.b, result.c, result.n) == (1, 3, 4)
    assert result.p_value == pytest.approx(2 * (1 + 4) / 16)
    assert mcnemar([True, False], [True, False]).p_value == 1.0  # no discordant pair
    assert mcnemar_exact(3, 3) == 1.0
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)
