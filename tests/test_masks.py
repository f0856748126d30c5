"""Sampling masks: nested across ratios, ratio met, centre sampled, seeded, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from survey.physics.masks import MASK_KINDS, make_mask

RATIOS = (0.1, 0.2, 0.4, 0.8, 1.0)
LINE_KINDS = [k for k in MASK_KINDS if k.endswith("-lines")]


@pytest.mark.parametrize("size", [16, 17, 64])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_masks_are_nested_and_meet_the_ratio(kind, size):
    masks = [make_mask(kind, size, r, seed=7) for r in RATIOS]
    candidates = size if kind in LINE_KINDS else size * size
    for ratio, mask in zip(RATIOS, masks):
        assert mask.dtype == torch.bool and mask.shape == (size, size)
        assert mask[size // 2, size // 2], "DC (the centre of the centred layout) must be sampled"
        taken = int(mask[:, 0].sum()) if kind in LINE_KINDS else int(mask.sum())
        assert abs(taken - ratio * candidates) <= 0.5 + 1e-9, (ratio, taken)
    for low, high in zip(masks, masks[1:]):
        assert not bool((low & ~high).any()), "a lower-ratio mask must be a subset of a higher-ratio one"
    assert bool(masks[-1].all())


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_seed_decides_the_mask(kind):
    first = make_mask(kind, 64, 0.3, seed=1)
    assert torch.equal(first, make_mask(kind, 64, 0.3, seed=1))
    assert not torch.equal(first, make_mask(kind, 64, 0.3, seed=2))


def test_returned_mask_is_a_fresh_tensor():
    mask = make_mask("random-points", 32, 0.3, seed=3)
    mask[:] = False
    assert make_mask("random-points", 32, 0.3, seed=3).any()


@pytest.mark.parametrize("kind", LINE_KINDS)
def test_line_masks_sample_whole_rows_with_a_full_centre_band(kind):
    mask = make_mask(kind, 64, 0.25, seed=0)
    rows = mask[:, 0]
    assert torch.equal(mask, rows[:, None].expand(64, 64)), "phase-encode lines are whole rows"
    assert int(rows.sum()) == 16
    assert bool(rows[28:36].all()), "default centre band: the 8 lines around DC"
    wide = make_mask(kind, 64, 0.25, seed=0, center_fraction=0.25)
    assert bool(wide[24:40, 0].all()) and int(wide[:, 0].sum()) == 16


@pytest.mark.parametrize("kind", ["random-points", "poisson-disc"])
def test_point_masks_have_a_small_full_centre(kind):
    mask = make_mask(kind, 64, 0.2, seed=0)
    rows, cols = torch.meshgrid(torch.arange(64) - 32, torch.arange(64) - 32, indexing="ij")
    assert bool(mask[rows**2 + cols**2 <= 16].all())
    no_centre = make_mask(kind, 64, 0.02, seed=0, center_fraction=0.0)
    assert not bool(no_centre[rows**2 + cols**2 <= 16].all())


def test_gaussian_lines_concentrate_near_the_centre():
    def mean_offset(kind):
        total, count = 0.0, 0
        for seed in range(20):
            rows = make_mask(kind, 64, 0.3, seed=seed, center_fraction=0.0)[:, 0].nonzero().squeeze(1)
            total += float((rows - 32).abs().sum())
            count += len(rows)
        return total / count

    assert mean_offset("gaussian-lines") < 0.75 * mean_offset("uniform-lines")


def _nearest_neighbour_distances(mask: torch.Tensor) -> torch.Tensor:
    points = mask.nonzero().double()
    dist = torch.cdist(points, points)
    dist.fill_diagonal_(math.inf)
    return dist.min(dim=1).values


def test_poisson_disc_points_keep_their_distance():
    # Outside the centre, a Poisson-disc mask at a low ratio keeps points apart; white noise does not.
    disc = make_mask("poisson-disc", 64, 0.05, seed=0, center_fraction=0.0)
    white = make_mask("random-points", 64, 0.05, seed=0, center_fraction=0.0)
    assert float(_nearest_neighbour_distances(disc).min()) >= 2.0
    assert float(_nearest_neighbour_distances(white).min()) <= 1.5


def test_radial_spokes_pass_through_the_centre_symmetrically():
    mask = make_mask("radial", 64, 0.15, seed=0)
    # Spokes are lines through DC: the point reflection through the centre maps the mask onto itself.
    inner = mask[1:, 1:]  # index 0 has no mirror at even n
    mirrored = torch.flip(inner, dims=(0, 1))
    agreement = float((inner & mirrored).sum()) / float(inner.sum())
    assert agreement > 0.85
    rows = make_mask("radial", 64, 0.05, seed=0).any(dim=1)
    assert bool(rows.all()), "a few spokes already reach every row (not a line mask)"


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="spiral", size=32, ratio=0.3), "unknown mask kind"),
    (dict(kind="radial", size=32, ratio=0.0), "ratio"),
    (dict(kind="radial", size=32, ratio=1.5), "ratio"),
    (dict(kind="radial", size=32, ratio=float("nan")), "ratio"),
    (dict(kind="radial", size=32, ratio="0.3"), "ratio"),
    (dict(kind="uniform-lines", size=3, ratio=0.3), "at least 4"),
    (dict(kind="uniform-lines", size=32.5, ratio=0.3), "integer"),
    (dict(kind="uniform-lines", size=32, ratio=0.3, seed=-1), "seed"),
    (dict(kind="uniform-lines", size=32, ratio=0.3, center_fraction=1.5), "center_fraction"),
])
def test_bad_parameters_are_refused_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_mask(**kwargs)


@pytest.mark.parametrize("size", [16, 17, 64, 96])
def test_equispaced_lines_are_nested_with_a_sampled_centre(size):
    ratios = [k / size for k in range(1, size + 1)]
    masks = [make_mask("equispaced-lines", size, r, seed=5)[:, 0] for r in ratios]
    band = round(0.125 * size)
    centre = torch.zeros(size, dtype=torch.bool)
    centre[torch.argsort((torch.arange(size) - size // 2).abs(), stable=True)[:band]] = True
    for count, (low, high) in enumerate(zip(masks, masks[1:]), start=1):
        assert int(low.sum()) == count and not bool((low & ~high).any()), "one more line per level, nested"
        if count >= band:
            assert bool(low[centre].all()), "the fully sampled centre comes first"


def test_equispaced_lines_end_a_level_on_the_lattice_through_dc():
    # 64 lines, 8 in the centre band: at spacing R = 8 the lattice c + 8k adds 7 lines outside the band.
    rows = make_mask("equispaced-lines", 64, 15 / 64, seed=0)[:, 0]
    offsets = torch.nonzero(rows).squeeze(1) - 32
    assert offsets.tolist() == [-32, -24, -16, -8, -4, -3, -2, -1, 0, 1, 2, 3, 8, 16, 24]
    # the same at any seed (the seed only orders lines within a level)
    assert torch.equal(rows, make_mask("equispaced-lines", 64, 15 / 64, seed=9)[:, 0])
    # spacing 4: every fourth line plus the band
    rows = make_mask("equispaced-lines", 64, 22 / 64, seed=3)[:, 0]
    outside = [o for o in (torch.nonzero(rows).squeeze(1) - 32).tolist() if not -4 <= o <= 3]
    assert outside == [o for o in range(-32, 32, 4) if not -4 <= o <= 3]
