"""The paired network / reference ratio leaves out (and counts) pairs whose searches did not level off."""

from __future__ import annotations

import pandas as pd
import pytest

from survey.analysis.paired import paired_ratios


def frame(levelled=None):
    rows = []
    for i, (net, ref) in enumerate([(2.0, 1.0), (4.0, 2.0), (3.0, 1.0)]):
        for who, gain in (("network", net), ("reference", ref)):
            rows.append({"network": "n", "budget": 0.02, "image_id": f"i{i}", "attacked": who, "gain": gain})
    out = pd.DataFrame(rows)
    if levelled is not None:
        out["levelled_off"] = levelled
    return out


def test_pairs_that_did_not_level_off_are_left_out_and_counted():
    everything = paired_ratios(frame(), by=["network", "budget"])[0]
    assert everything["images"] == 3 and everything["not_levelled"] == 0
    # image i2's reference search was still climbing: its pair is left out.
    flags = [True, True, True, True, True, False]
    kept = paired_ratios(frame(flags), by=["network", "budget"])[0]
    assert kept["images"] == 2 and kept["not_levelled"] == 1
    assert kept["ratio"] == pytest.approx(2.0)
    assert paired_ratios(frame([True] * 6), by=["network", "budget"])[0]["images"] == 3


def test_pairs_with_an_unconverged_reference_solve_are_left_out():
    data = frame([True] * 6)
    data["solver_converged"] = [None, True, None, False, None, True]
    kept = paired_ratios(data, by=["network", "budget"])[0]
    assert kept["images"] == 2 and kept["not_levelled"] == 1
