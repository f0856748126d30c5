"""The budget search's objectives and its levelling-off rule (tasks/budget_objectives.py)."""

from __future__ import annotations

import pytest
import torch

from survey.rare.distance import patch_change, relative_l2
from survey.tasks.budget_objectives import change, check_objective, levelled_off


def pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(3, 1, 16, 16, generator=g, dtype=torch.float64)
    return clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=torch.float64), clean


def test_l2_and_patch_are_the_rare_tasks_distances():
    out, clean = pair()
    assert torch.allclose(change("l2", out - clean, clean), relative_l2(out, clean))
    assert torch.allclose(change("patch", out - clean, clean, window=4), patch_change(out, clean, patch=4))


def test_patch_sees_a_local_change_that_l2_averages_away_and_roi_counts_only_inside():
    clean = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    bump = torch.zeros_like(clean)
    bump[..., 2:6, 9:13] = 0.1
    spread = torch.full_like(clean, 0.1 * 4 / 16)  # the same l2 norm spread over the image
    assert torch.allclose(change("l2", bump, clean), change("l2", spread, clean))
    assert torch.allclose(change("patch", spread, clean, window=4), change("l2", spread, clean))
    assert float(change("patch", bump, clean, window=4)) == pytest.approx(4 * float(change("l2", bump, clean)))
    assert float(change("roi", bump, clean, roi=(2, 9, 4, 4))) == pytest.approx(float(change("l2", bump, clean)))
    assert float(change("roi", bump, clean, roi=(8, 0, 8, 8))) == 0.0


@pytest.mark.parametrize("objective,window,roi,match", [
    ("linf", None, None, "objective"),
    ("patch", 1, None, "window"), ("patch", 17, None, "window"), ("patch", 2.5, None, "window"),
    ("roi", None, None, "roi"), ("roi", None, (0, 0, 4), "roi"), ("roi", None, (10, 10, 8, 4), "does not fit"),
    ("roi", None, (-1, 0, 4, 4), "roi"), ("roi", None, (0, 0, 0, 4), "roi"),
])
def test_bad_objective_settings_name_the_parameter(objective, window, roi, match):
    with pytest.raises(ValueError, match=match):
        check_objective(objective, window, roi, size=16)


def test_levelled_off_compares_the_last_quarter():
    rising = torch.tensor([1.0, 1.2, 1.4, 1.6, 1.8]).view(-1, 1)
    flat = torch.tensor([1.0, 1.5, 1.9, 1.995, 2.0]).view(-1, 1)
    assert levelled_off(torch.cat([rising, flat], dim=1)).tolist() == [False, True]
    assert not bool(levelled_off(torch.ones(1, 1)).any())  # no iteration run: not levelled off
