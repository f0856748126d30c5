"""Structural insertions: details have the asked size, contrast and place; the criterion discriminates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from survey.physics import make_physics
from survey.solvers.cs import make_reference
from survey.tasks import make_task
from survey.tasks.base import TaskContext, generator_for
from survey.tasks.insertion import Insertion, masked_correlation
from survey.tasks.symbols import DETAILS, GLYPHS, make_stamp, paste

N = 48


def phantom(n: int = N, count: int = 2) -> torch.Tensor:
    """Head-like images (count, 1, n, n) in [0, 1]: a disc of tissue (0.5) with a bright smooth patch, zero outside."""
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    images = []
    for k in range(count):
        r = ((yy - n / 2 + k) ** 2 + (xx - n / 2) ** 2).sqrt()
        disc = (r < 0.4 * n).double()
        patch = 0.3 * torch.exp(-((yy - 0.4 * n) ** 2 + (xx - (0.55 + 0.05 * k) * n) ** 2) / (0.02 * n * n))
        images.append(disc * (0.5 + patch))
    return torch.stack(images)[:, None].float()


def identity_net(y, physics):
    """A perfect reconstructor when H inverts A (denoise with sigma 0, fully sampled MRI)."""
    h = physics.H(y)
    return h.real if torch.is_complex(h) else h


def blur_net(y, physics, sigma: float = 3.0):
    """A heavy Gaussian blur of H(y): a 'network' that smears small details away."""
    h = identity_net(y, physics)
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=h.dtype)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    w = w / w.sum()
    h = F.conv2d(F.pad(h, (radius,) * 4, mode="replicate"), w.view(1, 1, -1, 1))
    return F.conv2d(h, w.view(1, 1, 1, -1))


def context(net=identity_net, physics=None, images=None, reference=None, unit_id="unit-0") -> TaskContext:
    images = phantom() if images is None else images
    physics = make_physics("denoise", size=images.shape[-1], sigma=0.0) if physics is None else physics
    return TaskContext(net=net, physics=physics, images=images, image_ids=[f"img{k}" for k in range(len(images))],
                       reference=reference, unit_id=unit_id)


def run(task: Insertion, ctx: TaskContext):
    return task(ctx, generator_for(ctx.unit_id))


# -- drawing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("detail", DETAILS)
@pytest.mark.parametrize("size", [8, 16, 24])
def test_stamp_has_the_requested_height_and_unit_peak(detail, size):
    stamp = make_stamp(detail, size, text="CAN U SEE IT")
    assert abs(stamp.mask_height() - size) <= 2
    assert stamp.profile.max() == 1.0 and stamp.profile.min() >= 0.0
    assert stamp.mask.sum() >= 4
    if detail != "blob":  # solid shapes: the mask is the pixels at least half covered
        assert np.all(stamp.profile[stamp.mask] >= 0.5 - 1e-12)


def test_glyphs_are_distinct_shapes_from_the_font():
    masks = {name: make_stamp(name, 24).mask for name in GLYPHS}
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if masks[a].shape == masks[b].shape:
                assert (masks[a] != masks[b]).sum() > 20, (a, b)
    # The text is wide: 12 characters at height 10 span several times its height, with gaps.
    text = make_stamp("text", 10).mask
    assert text.shape[1] > 5 * text.shape[0]
    assert (~text.any(axis=0)).sum() > 5  # empty columns between letters and at the blanks


def test_paste_places_the_stamp_centre_and_refuses_to_leave_the_image():
    stamp = make_stamp("diamond", 9)
    images, masks = paste(stamp, torch.tensor([[10, 20], [30, 5]]), 40, dtype=torch.float64)
    h, w = stamp.shape
    assert images.shape == (2, 1, 40, 40) and masks.dtype == torch.bool
    assert torch.equal(images[0, 0, 10 - h // 2:10 - h // 2 + h, 20 - w // 2:20 - w // 2 + w],
                       torch.from_numpy(stamp.profile.copy()))
    assert images[0].sum() == pytest.approx(float(stamp.profile.sum()))
    with pytest.raises(ValueError, match="does not fit"):
        paste(stamp, torch.tensor([[1, 20]]), 40)


# -- the task --------------------------------------------------------------------------------------

@pytest.mark.parametrize("contrast", [0.35, -0.25])
def test_insertions_have_the_asked_size_contrast_and_lie_in_tissue(contrast):
    task = make_task("insertion", detail="spade", size=10, contrast=contrast, count=3)
    images = phantom()
    result = run(task, context(images=images))
    assert len(result.rows) == 2 * 3
    x = images.repeat_interleave(3, dim=0)
    d = result.tensors["x_d"] - x
    mask = result.tensors["mask"]
    tissue = x > task.tissue_threshold
    for k, row in enumerate(result.rows):
        peak = d[k].max() if contrast > 0 else d[k].min()
        assert float(peak) == pytest.approx(contrast, abs=1e-6)
        rows = torch.nonzero(mask[k, 0].any(dim=1)).flatten()
        assert abs(int(rows[-1] - rows[0] + 1) - 10) <= 2
        assert bool(tissue[k][mask[k]].all()) and row["inside_tissue"] == 1.0
        assert row["detail_pixels"] == int(mask[k].sum())
        assert torch.count_nonzero(d[k][~mask[k]].abs() > 0.5 * abs(contrast)) == 0  # only edge pixels outside
        assert row["image_id"] == f"img{k // 3}" and row["draw"] == k % 3
        assert (row["detail"], row["size"], row["contrast"], row["position"]) == ("spade", 10, contrast,
                                                                                  "random-tissue")


@pytest.mark.parametrize("physics_kind", ["denoise", "mri"])
@pytest.mark.parametrize("detail", DETAILS)
def test_a_perfect_reconstructor_recovers_every_detail(detail, physics_kind):
    physics = (make_physics("denoise", size=N, sigma=0.0) if physics_kind == "denoise"
               else make_physics("mri", size=N, ratio=1.0, mask="gaussian-lines", seed=0))
    size = 5 if detail == "text" else 8
    result = run(make_task("insertion", detail=detail, size=size, contrast=0.3), context(physics=physics))
    for row in result.rows:
        assert row["recovered"] is True
        assert row["corr"] == pytest.approx(1.0, abs=1e-4)
        assert row["contrast_ratio"] == pytest.approx(1.0, abs=1e-4)
        assert row["local_psnr"] > 60


@pytest.mark.parametrize("detail", ["spade", "club", "heart-curve", "blob"])
def test_a_heavy_blur_loses_small_details_that_the_identity_keeps(detail):
    task = make_task("insertion", detail=detail, size=6, contrast=0.3, count=2)
    sharp = run(task, context(net=identity_net))
    blurred = run(task, context(net=blur_net))
    assert all(row["recovered"] for row in sharp.rows)
    assert not any(row["recovered"] for row in blurred.rows)
    for s, b in zip(sharp.rows, blurred.rows):
        assert (s["centre_row"], s["centre_col"]) == (b["centre_row"], b["centre_col"])  # same draws
        assert b["contrast_ratio"] < 0.5 < s["contrast_ratio"]
        assert b["corr"] < s["corr"] and b["local_psnr"] < s["local_psnr"]


def test_the_same_unit_id_gives_identical_rows_and_another_id_other_positions():
    task = make_task("insertion", detail="heart", size=8, contrast=0.3, count=4)
    first = run(task, context(unit_id="unit-a"))
    again = run(task, context(unit_id="unit-a"))
    other = run(task, context(unit_id="unit-b"))
    assert first.rows == again.rows
    assert torch.equal(first.tensors["x_d"], again.tensors["x_d"])
    positions = lambda res: [(r["centre_row"], r["centre_col"]) for r in res.rows]  # noqa: E731
    assert positions(first) != positions(other)


def test_fixed_position_and_clear_errors():
    result = run(make_task("insertion", detail="club", size=8, position=[20, 26]), context())
    assert {(r["centre_row"], r["centre_col"], r["position"]) for r in result.rows} == {(20, 26, "20,26")}
    with pytest.raises(ValueError, match="leaves"):
        run(make_task("insertion", detail="club", size=8, position=[2, 26]), context())
    with pytest.raises(ValueError, match="detail"):
        make_task("insertion", detail="joker")
    with pytest.raises(ValueError, match="contrast"):
        make_task("insertion", contrast=0)
    with pytest.raises(ValueError, match="position"):
        make_task("insertion", position="somewhere")
    with pytest.raises(ValueError, match="does not fit"):
        run(make_task("insertion", detail="text", size=12), context())  # ~105 px wide in a 48 px image


def test_random_tissue_falls_back_to_the_most_tissue_when_nothing_fits():
    images = torch.zeros(1, 1, N, N)
    images[0, 0, 20:26, 20:26] = 0.6  # a 6 x 6 tissue island: a 14 px heart cannot fit inside
    result = run(make_task("insertion", detail="heart", size=14, count=3), context(images=images))
    for row in result.rows:  # the 14 px heart's interior holds a 6 x 6 block: the best placements cover the island
        assert row["inside_tissue"] < 1.0
        assert round(row["inside_tissue"] * row["detail_pixels"]) == 36


def test_reference_columns_and_kept_tensors_are_aligned_with_rows():
    physics = make_physics("mri", size=32, ratio=0.5, mask="gaussian-lines", seed=1)
    reference = make_reference(physics, iterations=5)
    task = make_task("insertion", detail="blob", size=8, contrast=0.4, count=2)
    result = run(task, context(physics=physics, images=phantom(32), reference=reference))
    assert set(result.tensors) == {"x_d", "out", "ref_out", "mask"}
    assert all(t.shape[0] == len(result.rows) == 4 for t in result.tensors.values())
    for row in result.rows:
        for key in ("corr", "contrast_ratio", "local_psnr", "local_ssim", "recovered"):
            assert f"ref_{key}" in row
        assert row["ref_recovered"] == (row["ref_corr"] >= 0.5 and row["ref_contrast_ratio"] >= 0.5)
        assert row["task"] == "insertion" and row["physics"] == "mri"
    assert Insertion.table == "insertions"
    assert make_task("insertion", keep_tensors=False).keep_tensors is False


def test_masked_correlation_is_pearson_over_the_region():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(3, 1, 8, 8, generator=g,
                                                                                  dtype=torch.float64)
    region = torch.rand(3, 1, 8, 8, generator=g) > 0.4
    got = masked_correlation(a, b, region)
    for k in range(3):
        expected = np.corrcoef(a[k][region[k]].numpy(), b[k][region[k]].numpy())[0, 1]
        assert float(got[k]) == pytest.approx(expected, abs=1e-12)
    assert float(masked_correlation(torch.zeros_like(a), b, region)[0]) == 0.0


def test_noisy_operators_share_one_noise_draw_with_and_without_the_detail():
    physics = make_physics("denoise", size=N, sigma=0.1)
    result = run(make_task("insertion", detail="ellipse", size=10, contrast=0.3, count=2), context(physics=physics))
    for row in result.rows:  # identity on noisy data: the noise cancels in f(y_d) - f(y)
        assert row["corr"] == pytest.approx(1.0, abs=1e-5) and row["recovered"]
        assert row["local_psnr"] < 30  # but the reconstruction itself is noisy


def test_the_rule_fails_zero_filling_at_25_percent_and_passes_the_identity():
    """The control that keeps the rule honest: H = A* at 64 x 64 with 25% Gaussian lines blurs sharp-edged
    details (corr and contrast stay high, sharpness does not), so it must mostly fail; the identity passes."""
    from survey.data import load_dataset

    x = load_dataset("brain", split="test", size=64, count=4).images
    physics = make_physics("mri", size=64, ratio=0.25, mask="gaussian-lines", seed=0)
    rows = []
    for detail in ("spade", "heart", "club"):
        task = make_task("insertion", detail=detail, size=10, contrast=0.3, count=2, keep_tensors=False)
        ctx = TaskContext(net=identity_net, physics=physics, images=x, image_ids=[f"i{k}" for k in range(4)],
                          unit_id="control")
        rows += run(task, ctx).rows
    assert len(rows) == 24
    h_passed = np.mean([r["h_recovered"] for r in rows])
    assert h_passed <= 0.25, h_passed
    assert np.median([r["h_corr"] for r in rows]) > 0.8  # corr alone would have passed it
    assert np.median([r["h_sharpness"] for r in rows]) < 0.7
    # identity_net returns H's output too here (it reconstructs |A* y|): so it must agree with h_ columns
    assert [r["recovered"] for r in rows] == [r["h_recovered"] for r in rows]
    perfect = make_physics("mri", size=64, ratio=1.0, mask="gaussian-lines", seed=0)
    ctx = TaskContext(net=identity_net, physics=perfect, images=x, image_ids=[f"i{k}" for k in range(4)], unit_id="c")
    exact = run(make_task("insertion", detail="spade", size=10, contrast=0.3, count=2), ctx).rows
    assert all(r["recovered"] and r["sharpness"] == pytest.approx(1.0, abs=1e-4) for r in exact)


def test_a_blurred_detail_does_not_pass_even_with_its_shape_and_contrast_kept():
    task = make_task("insertion", detail="spade", size=12, contrast=0.3, count=2)
    soft = run(task, context(net=lambda y, p: blur_net(y, p, sigma=1.2)))
    for row in soft.rows:
        assert row["corr"] >= 0.8 and row["sharpness"] < task.sharpness_threshold and not row["recovered"]
    with pytest.raises(ValueError, match="contrast_max"):
        make_task("insertion", contrast_threshold=0.6, contrast_max=0.5)


def test_report_pairs_network_and_reference_and_draws_recovery_curves(tmp_path):
    import pandas as pd

    from survey.analysis.sections.insertions import paired_tests, recovery_curves

    frame = pd.DataFrame({"network": ["a"] * 8 + ["b"] * 4, "contrast": [0.15, 0.3] * 6, "size": [8, 8, 12, 12] * 3,
                          "recovered": [True, False, False, False, False, False, False, True, True, True, True, True],
                          "ref_recovered": [True, True, True, True, True, True, True, True, True, True, True, True],
                          "h_recovered": [False] * 12, "dataset": ["d"] * 12,
                          "image_id": [f"i{j // 2}" for j in range(8)] + [f"i{j // 2}" for j in range(4)]})
    tests = {t["network"]: t for t in paired_tests(frame)}
    a = tests["a"]
    assert (a["b"], a["c"]) == (0, 6) and a["p_pooled"] == pytest.approx(2 / 64)   # placements as independent
    # paired per image (4 images, 2 placements each): per-image differences -0.5, -1, -1, -0.5 ... all of one
    # sign, so the exact sign-flip p is its floor 2 / 2^4; 4 images cannot exclude any difference at 95%
    assert a["unit"] == "image" and a["clusters"] == 4 and a["p_sign_flip"] == pytest.approx(2 / 16)
    assert a["difference"] == pytest.approx(-0.75) and (a["ci_low"], a["ci_high"]) == (-1.0, 1.0)
    assert tests["b"]["p"] == 1.0 and tests["b"]["pairs"] == 4 and tests["b"]["clusters"] == 2
    paths = recovery_curves(frame, tmp_path / "curves")
    assert all(path.exists() for path in paths)
