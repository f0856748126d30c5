"""The detect task (tasks/detect.py) and its analysis (analysis/detection.py): exact answers for the
scores (an oracle detector correlates 1 with the output change, a constant one 0), every experiment and
method on a tiny DnCNN with real companions, AUC / AUPRC against closed forms, Table 1's mean +- sd."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from survey.analysis.detection import (adaptive_table, average_precision, bootstrap_by_image, decision_table,
                                       roc_auc, roc_curve, table_one)
from survey.nets.dncnn import DnCNN
from survey.nets.uncertainty import build_companion
from survey.physics import make_physics
from survey.tasks import TaskContext, generator_for, make_task

SIZE = 16


class Oracle(nn.Module):
    """A 'detector' whose u is the network output itself: |u(y) - u(y')| = |f(y) - f(y')| exactly."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def uncertainty(self, y, physics, generator=None):
        return self.net(y, physics)


class Constant(nn.Module):
    def uncertainty(self, y, physics, generator=None):
        return torch.ones(y.shape[0], 1, SIZE, SIZE, dtype=y.dtype)


def _tiny():
    torch.manual_seed(0)
    net = DnCNN(depth=4, width=4).double().eval()
    physics = make_physics("denoise", size=SIZE, sigma=0.1)
    images = nn.functional.avg_pool2d(torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1),
                                                 dtype=torch.float64), 3, 1, 1) + 0.2
    return net, physics, images


def _ctx(companions, unit="u1"):
    net, physics, images = _tiny()
    comps = {k: (v(net) if callable(v) and not isinstance(v, nn.Module) else v) for k, v in companions.items()}
    return TaskContext(net=net, physics=physics, images=images, image_ids=["a", "b"], network="tiny",
                       dataset="noise", unit_id=unit, companions=comps)


FAST = dict(adv_iterations=3, budget_iterations=2, adaptive_iterations=2, restarts=1, insert_contrasts=[0.1, 0.9],
            art_size=0.4, insert_size=0.4, passes=4, attack_passes=2)


def test_oracle_detector_scores_one_and_constant_detector_zero():
    ctx = _ctx({"inn": Oracle, "probout": lambda net: Constant()})
    task = make_task("detect", methods=["inn", "probout"], experiments=["advdetect"], **{
        k: v for k, v in FAST.items() if k in ("adv_iterations",)})
    rows, _ = task(ctx, generator_for("u1"))
    oracle = [r["pearson"] for r in rows if r["method"] == "inn"]
    constant = [r["pearson"] for r in rows if r["method"] == "probout"]
    assert oracle == pytest.approx([1.0, 1.0], abs=1e-9)
    assert constant == [0.0, 0.0]
    assert all(r["target_error"] < 1.0 for r in rows)  # the attack moved towards its target


def test_every_method_and_experiment_with_real_companions():
    net, physics, images = _tiny()
    comps = {"inn": build_companion("inn", net, layers=2).double(),
             "mcdropout": build_companion("mcdropout", net, layers=2, p=0.2).double(),
             "probout": build_companion("probout", net).double()}
    with torch.no_grad():
        for p in comps["inn"].w_hi:
            p.add_(1e-3)
    ctx = TaskContext(net=net, physics=physics, images=images, image_ids=["a", "b"], network="tiny",
                      dataset="noise", unit_id="u2", companions=comps)
    rows, _ = make_task("detect", **FAST)(ctx, generator_for("u2"))
    experiments = ("advdetect", "artdetect", "worstcase", "gaussian", "adaptive")
    counts = pd.DataFrame(rows).groupby(["method", "experiment"]).size()
    for method in comps:
        for experiment in experiments:
            assert counts[(method, experiment)] == 2
        assert counts[(method, "insertion")] == 4
    for r in rows:
        assert (r["pearson"] is not None) == (r["experiment"] in ("advdetect", "artdetect"))
        assert (r["lost"] is not None) == (r["experiment"] == "insertion")
        assert (r["passes"] == 4) == (r["method"] == "mcdropout")
        if r["experiment"] in ("worstcase", "gaussian", "adaptive"):
            assert r["input_change_rel"] <= 0.05 + 1e-9 and r["budget"] == 0.05
    wc = {(r["method"], r["image_id"]): r["input_change_rel"] for r in rows if r["experiment"] == "worstcase"}
    ga = {(r["method"], r["image_id"]): r["input_change_rel"] for r in rows if r["experiment"] == "gaussian"}
    assert all(math.isclose(wc[k], ga[k], rel_tol=1e-6) for k in wc)  # Gaussian noise of the same norm
    again, _ = make_task("detect", **FAST)(ctx, generator_for("u2"))
    assert [r["u_mean"] for r in again] == [r["u_mean"] for r in rows]
    other, _ = make_task("detect", **{**FAST, "seed": 1})(ctx, generator_for("u2"))
    assert [r["u_mean"] for r in other] != [r["u_mean"] for r in rows]  # the run seed enters the draws


def test_missing_companion_is_named():
    ctx = _ctx({})
    with pytest.raises(ValueError, match="survey zoo train tiny-inn"):
        make_task("detect", methods=["inn"])(ctx, generator_for("u3"))


def test_roc_auc_and_average_precision_closed_forms():
    pos, neg = np.array([0.9, 0.8, 0.3]), np.array([0.5, 0.3, 0.1])
    # pairs (p > n): 0.9, 0.8 beat all 3; 0.3 beats 0.1 and ties 0.3 -> (3 + 3 + 1 + 0.5) / 9
    assert roc_auc(pos, neg) == pytest.approx(7.5 / 9)
    assert roc_auc([1, 2], [3, 4]) == 0.0 and roc_auc([3, 4], [1, 2]) == 1.0
    assert math.isnan(roc_auc([], [1.0]))
    # ranking 0.9+, 0.8+, 0.5-, {0.3+, 0.3-}, 0.1-: AP = 1/3 * 1 + 1/3 * 1 + 1/3 * 3/5
    assert average_precision(pos, neg) == pytest.approx((1 + 1 + 0.6) / 3)
    fpr, tpr = roc_curve(pos, neg)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(pos, neg))


def test_bootstrap_interval_covers_and_is_degenerate_for_perfect_separation():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"image_key": np.repeat(np.arange(30), 2), "s": rng.normal(size=60)})
    frame.loc[::2, "s"] += 1.0
    pos, neg = frame.iloc[::2], frame.iloc[1::2]
    auc, low, high = bootstrap_by_image(pos, neg, "s", roc_auc, n_boot=300)
    assert low <= auc <= high and 0.5 < auc
    sep = frame.copy()
    sep.loc[::2, "s"] = 10 + np.arange(30)
    auc, low, high = bootstrap_by_image(sep.iloc[::2], sep.iloc[1::2], "s", roc_auc, n_boot=100)
    assert auc == low == high == 1.0


def _frame():
    rows = []
    for seed in range(3):
        for image in ("a", "b"):
            for experiment, value in (("advdetect", 0.5 + 0.1 * seed), ("artdetect", 0.2)):
                rows.append({"network": "dncnn", "physics": "denoise", "dataset": "brain", "image_id": image,
                             "method": "inn", "experiment": experiment, "seed": seed, "pearson": value})
            for experiment, score, change in (("worstcase", 2.0, 0.1), ("gaussian", 1.0, 0.01), ("adaptive", 1.5, 0.05)):
                rows.append({"network": "dncnn", "physics": "denoise", "dataset": "brain", "image_id": image,
                             "method": "inn", "experiment": experiment, "seed": seed, "pearson": None,
                             "u_mean": score, "u_max": score, "u_mean_clean": 1.0, "u_max_clean": 1.0,
                             "out_change_rel": change, "lost": None})
    return pd.DataFrame(rows)


def test_table_one_is_mean_and_sd_over_runs():
    t1 = table_one(_frame(), n_boot=50)
    adv = t1[t1["experiment"] == "advdetect"].iloc[0]
    assert adv["mean"] == pytest.approx(0.6) and adv["sd"] == pytest.approx(0.1)
    assert adv["runs"] == 3 and adv["images"] == 2 and adv["use_case"] == "denoising"


def test_decision_and_adaptive_tables():
    decisions = decision_table(_frame(), n_boot=50)
    row = decisions[(decisions["failure"] == "worst case vs Gaussian") & (decisions["score"] == "u_max")].iloc[0]
    assert row["auc"] == 1.0 and row["positives"] == 6 and row["negatives"] == 6
    table = adaptive_table(_frame(), decisions)
    assert table.iloc[0]["damage_kept"] == pytest.approx(0.5)
    assert table.iloc[0]["auc_adaptive"] == 1.0
