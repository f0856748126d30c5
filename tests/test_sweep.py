"""Sampling sweeps: nested operators, the right levels in the rows, failures recorded, replayable."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from survey.metrics import psnr
from survey.physics import make_physics
from survey.solvers.cs import make_reference
from survey.tasks import make_task
from survey.tasks.base import TaskContext, generator_for
from survey.tasks.sweep import Sweep

N = 32


def smooth_phantom(n: int = N, count: int = 2) -> torch.Tensor:
    """Smooth head-like images (count, 1, n, n) in [0, 1]: a soft-edged disc with a Gaussian patch."""
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    images = []
    for k in range(count):
        r = ((yy - n / 2) ** 2 + (xx - n / 2 + k) ** 2).sqrt()
        disc = torch.sigmoid((0.38 * n - r) / 1.0)
        patch = 0.35 * torch.exp(-((yy - 0.4 * n) ** 2 + (xx - (0.55 - 0.05 * k) * n) ** 2) / (0.01 * n * n))
        images.append(disc * (0.45 + patch))
    return torch.stack(images)[:, None].float()


def zero_filled(y, physics):
    """The easy reconstruction as a "network": Re H(y) (the scoring convention), what h_psnr scores."""
    h = physics.H(y)
    return h.real if torch.is_complex(h) else h


class BoundNet(nn.Module):
    """AUTOMAP-like: a dense layer sized for the sampled values of one mask; other masks break its shapes."""

    def __init__(self, physics):
        super().__init__()
        m = int(physics.sampling.sum())
        self.n = physics.size
        self.dense = nn.Linear(2 * m, self.n * self.n)

    def forward(self, y, physics):
        samples = torch.view_as_real(y.reshape(y.shape[0], -1)[:, physics.sampling.flatten()]).flatten(1)
        return self.dense(samples.to(self.dense.weight.dtype)).reshape(-1, 1, self.n, self.n)


def context(physics, net=zero_filled, images=None, reference=None, unit_id="unit-0") -> TaskContext:
    images = smooth_phantom() if images is None else images
    return TaskContext(net=net, physics=physics, images=images, image_ids=[f"img{k}" for k in range(len(images))],
                       reference=reference, unit_id=unit_id)


def run(task, ctx):
    return task(ctx, generator_for(ctx.unit_id))


@pytest.mark.parametrize("mask", ["gaussian-lines", "random-points", "radial"])
def test_masks_of_increasing_ratio_are_nested(mask):
    physics = make_physics("mri", size=N, ratio=0.25, mask=mask, seed=3)
    levels = Sweep(ratios=[0.1, 0.2, 0.4, 0.7, 1.0]).levels(physics)
    masks = [level.physics.mask for level in levels]
    ratios = [level.value for level in levels]
    assert ratios == sorted(ratios) and ratios[-1] == 1.0
    for small, large in zip(masks, masks[1:]):
        assert bool((small <= large).all()) and int(small.sum()) < int(large.sum())
    at_train = [level for level in levels if level.at_train]
    assert len(at_train) == 1 and torch.equal(at_train[0].physics.mask, physics.mask)


def test_rows_carry_achieved_requested_and_training_ratios():
    physics = make_physics("mri", size=N, ratio=0.25, mask="gaussian-lines", seed=0)
    result = run(make_task("sweep", ratios=[0.1, 0.5, 1.0]), context(physics))
    # 0.25 (the network's own) is added to the three requested levels.
    assert len(result.rows) == 2 * 4
    assert [r["requested_ratio"] for r in result.rows[::2]] == [0.1, 0.25, 0.5, 1.0]
    for row in result.rows:
        assert row["train_ratio"] == physics.ratio == 0.25
        assert row["axis"] == "ratio" and row["value"] == row["ratio"]
        assert abs(row["ratio"] - row["requested_ratio"]) <= 0.5 / N  # within half a line
        assert row["at_train"] == (row["requested_ratio"] == 0.25)
        assert row["error"] == "" and math.isfinite(row["psnr"])
        assert row["psnr"] == pytest.approx(row["h_psnr"])  # the zero-filled "network" is H
    assert [r["image_id"] for r in result.rows[:2]] == ["img0", "img1"]
    full = [r for r in result.rows if r["ratio"] == 1.0]
    assert all(r["psnr"] > 100 for r in full)  # full sampling: H inverts A


def test_the_reference_improves_with_more_samples():
    physics = make_physics("mri", size=N, ratio=0.25, mask="gaussian-lines", seed=0)
    reference = make_reference(physics, iterations=20)
    result = run(make_task("sweep", ratios=[0.1, 1.0], include_train=False), context(physics, reference=reference))
    low = {r["image_id"]: r for r in result.rows if r["requested_ratio"] == 0.1}
    full = {r["image_id"]: r for r in result.rows if r["requested_ratio"] == 1.0}
    for image_id in low:
        assert full[image_id]["ref_psnr"] > low[image_id]["ref_psnr"] + 10
        assert full[image_id]["ref_ssim"] > low[image_id]["ref_ssim"]


def test_radon_sweeps_views_and_improves_with_them():
    physics = make_physics("radon", size=N, views=16)
    reference = make_reference(physics, iterations=10)
    result = run(make_task("sweep", views=[4, 45]), context(physics, reference=reference))
    assert [r["views"] for r in result.rows[::2]] == [4, 16, 45]
    for row in result.rows:
        assert row["train_views"] == 16 and row["axis"] == "views" and row["physics"] == "radon"
        assert row["at_train"] == (row["views"] == 16)
    by_views = {r["views"]: r for r in result.rows if r["image_id"] == "img0"}
    assert by_views[45]["h_psnr"] > by_views[4]["h_psnr"] + 3
    assert by_views[45]["ref_psnr"] > by_views[4]["ref_psnr"]
    # the reference keeps the weights of the 16-view operator at 45 views (not those of its own norm)
    x, wide = smooth_phantom()[:1], make_physics("radon", size=N, views=45)
    fixed = float(psnr(reference.weights_fixed_at(physics)(wide.A(x), wide), x))
    relative = float(psnr(reference(wide.A(x), wide), x))
    assert by_views[45]["ref_psnr"] == pytest.approx(fixed, abs=1e-4) and abs(fixed - relative) > 1e-3


def test_a_network_bound_to_its_mask_fails_elsewhere_and_the_error_is_recorded():
    physics = make_physics("mri", size=N, ratio=0.25, mask="random-points", seed=0)
    torch.manual_seed(0)
    reference = make_reference(physics, iterations=5)
    result = run(make_task("sweep", ratios=[0.1, 0.5], keep_tensors=True),
                 context(physics, net=BoundNet(physics), reference=reference))
    for row in result.rows:
        assert math.isfinite(row["ref_psnr"]) and math.isfinite(row["h_psnr"])
        if row["at_train"]:
            assert row["error"] == "" and math.isfinite(row["psnr"])
        else:
            assert row["error"].startswith("RuntimeError") and math.isnan(row["psnr"]) and math.isnan(row["ssim"])
    assert result.tensors["out"].shape == (len(result.rows), 1, N, N)
    assert result.tensors["ref_out"].shape == (len(result.rows), 1, N, N)


def test_denoise_sweeps_sigma_and_replays_identically_by_unit_id():
    physics = make_physics("denoise", size=N, sigma=0.1)
    task = make_task("sweep", sigmas=[0.0, 0.05, 0.2])
    first = run(task, context(physics, unit_id="unit-a"))
    again = run(task, context(physics, unit_id="unit-a"))
    other = run(task, context(physics, unit_id="unit-b"))
    assert first.rows == again.rows
    assert [r["sigma"] for r in first.rows[::2]] == [0.2, 0.1, 0.05, 0.0]  # noisiest first
    assert all(r["train_sigma"] == 0.1 for r in first.rows)
    psnr = [r["h_psnr"] for r in first.rows if r["image_id"] == "img0"]
    assert psnr == sorted(psnr) and math.isinf(psnr[-1])  # less noise, better; sigma 0 is exact
    assert [r["h_psnr"] for r in first.rows if r["sigma"] > 0] != [r["h_psnr"] for r in other.rows if r["sigma"] > 0]


def test_mri_sweeps_replay_identically_and_parameters_are_checked():
    physics = make_physics("mri", size=N, ratio=0.25, mask="gaussian-lines", seed=0)
    task = make_task("sweep", ratios=[0.2, 0.6])
    assert run(task, context(physics)).rows == run(task, context(physics)).rows
    assert set(Sweep.list_params) == {"ratios", "views", "sigmas"}  # a flat list is one value (plan)
    with pytest.raises(ValueError, match="ratios"):
        make_task("sweep", ratios=[0.5, 1.5])
    with pytest.raises(ValueError, match="views"):
        make_task("sweep", views=[10, 2.5])
    with pytest.raises(ValueError, match="sigmas"):
        make_task("sweep", sigmas=[-0.1])
    with pytest.raises(ValueError, match="ratios"):
        make_task("sweep", ratios=0.5)
    with pytest.raises(ValueError, match="non-empty `views`"):
        run(make_task("sweep", views=[]), context(make_physics("radon", size=N, views=8)))


def test_an_equispaced_sweep_of_an_mrivn_like_operator_is_nested_with_the_centre_sampled():
    physics = make_physics("pmri", size=N, ratio=0.15, mask="uniform-lines", seed=0, coils=4)
    task = make_task("sweep", ratios=[0.1, 0.2, 0.3, 0.5], mask="equispaced-lines")
    levels = task.levels(physics)
    assert [round(lv.value, 4) for lv in levels] == sorted(round(lv.value, 4) for lv in levels)
    assert any(lv.columns["requested_ratio"] == physics.ratio for lv in levels)  # the training ratio, same family
    band = slice(N // 2 - 2, N // 2 + 2)  # round(0.125 * 32) = 4 centre lines
    for small, large in zip(levels, levels[1:]):
        assert bool((small.physics.mask <= large.physics.mask).all())
    for lv in levels:
        assert lv.columns["mask"] == "equispaced-lines" and not lv.at_train
        if lv.value >= 4 / N:  # below 4 lines a level holds the lines nearest DC
            assert bool(lv.physics.mask[band].all()), "the fully sampled centre is in every level"
    result = run(task, context(physics))
    assert {r["mask"] for r in result.rows} == {"equispaced-lines"} and all(r["forward"] == "same" for r in result.rows)
    with pytest.raises(ValueError, match="mask"):
        make_task("sweep", mask="zigzag")
    with pytest.raises(ValueError, match="Fourier operator"):
        run(task, context(make_physics("radon", size=N, views=8)))


def test_a_network_reading_only_its_trained_points_is_labelled_fixed_sampling_and_not_scored():
    from survey.nets.automap import Automap

    physics = make_physics("mri", size=N, ratio=0.6, mask="random-points", seed=0)
    torch.manual_seed(0)
    automap = Automap(physics, conv_width=4).double()
    result = run(make_task("sweep", ratios=[0.3, 0.9]), context(physics, net=automap, images=smooth_phantom().double()))
    for row in result.rows:
        assert row["fixed_sampling"] is True and row["skipped"].startswith("fixed sampling by construction")
        assert math.isnan(row["psnr"]) and math.isfinite(row["h_psnr"]) and row["error"] == ""
    # a network that does use the new samples (here H) is scored and not flagged
    plain = run(make_task("sweep", ratios=[0.3, 0.9]), context(physics))
    assert all(r["fixed_sampling"] is False and r["skipped"] == "" and math.isfinite(r["psnr"]) for r in plain.rows)


def test_a_finer_forward_model_differs_a_little_from_the_same_one():
    images = smooth_phantom(count=2).double()
    physics = make_physics("radon", size=N, views=16)
    same = run(make_task("sweep", views=[8, 32]), context(physics, images=images))
    finer = run(make_task("sweep", views=[8, 32], forward="finer"), context(physics, images=images))
    assert [r["forward"] for r in finer.rows] == ["finer"] * len(finer.rows)
    for a, b in zip(same.rows, finer.rows):
        assert a["views"] == b["views"] and a["image_id"] == b["image_id"]
        assert a["h_psnr"] != b["h_psnr"]  # not the same data: no inverse crime
        assert abs(a["h_psnr"] - b["h_psnr"]) < 1.0 and b["h_psnr"] > 20  # but a plausible, small change
    # the measurements themselves: a fraction of a percent apart, and factor 1 is A itself
    op = physics.at_level("views", 32)
    y, y_fine = op.A(images), op.A_finer(images)
    relative = float((y_fine - y).norm() / y.norm())
    assert 1e-4 < relative < 2e-2
    assert torch.allclose(op.A_finer(images, factor=1), y, rtol=0, atol=1e-6 * float(y.abs().max()))  # longer rays
    with pytest.raises(ValueError, match="finer forward model"):
        run(make_task("sweep", ratios=[0.5], forward="finer"),
            context(make_physics("mri", size=N, ratio=0.25, mask="gaussian-lines")))


def test_the_report_names_fixed_sampling_and_the_finer_forward_model(tmp_path):
    import pandas as pd

    from survey.analysis.sections.sweeps import sweep_curves, sweep_notes

    frame = pd.DataFrame({"network": ["automap", "automap", "ell50", "ell50"], "axis": ["ratio", "ratio", "views", "views"],
                          "value": [0.3, 0.6, 20, 50], "train_value": [0.6, 0.6, 50, 50],
                          "psnr": [math.nan, math.nan, 25.0, 28.0], "ref_psnr": [20.0, 24.0, 26.0, 29.0],
                          "h_psnr": [18.0, 21.0, 20.0, 24.0], "fixed_sampling": [True, True, False, False],
                          "forward": ["same", "same", "finer", "finer"], "mask": ["random-points", "random-points", None, None]})
    notes = sweep_notes(frame)
    assert any(n.startswith("Fixed sampling by construction: automap") for n in notes)
    assert any("Finer forward model" in n and "ell50" in n for n in notes)
    assert all(path.exists() for path in sweep_curves(frame, tmp_path / "sweep", n_boot=10))
