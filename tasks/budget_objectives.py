"""What the budget search maximises, and when it has levelled off.

Objectives (`objective`): the output change the search ascends, per sample, from diff = f(u) - f(Ax):
- "l2": ||diff|| (the global change; gain = (||diff|| / ||f(Ax)||) / (||r|| / ||x||));
- "patch": the largest RMS of diff over a sliding window x window (stride 1), over the RMS of f(Ax) over
  the whole image: the rare task's `patch` distance (survey.rare.distance.patch_change), so a
  localised artefact is not averaged away; equals the l2 measure for a change spread evenly;
- "roi": ||diff|| inside a region of interest (a rectangle, rows and columns [top, top + height) x
  [left, left + width)), over ||f(Ax)|| on the whole image.
Every objective is differentiable almost everywhere (the patch maximum passes its gradient to the
winning window), so the same projected ascent applies.

Levelling off (`levelled_off`): the best gain rose by less than `rise` (relative) over the last
`fraction` of the iterations run.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

OBJECTIVES = ("l2", "patch", "roi")


def check_objective(objective: str, window: int | None, roi: Sequence[int] | None,
                    size: int | None = None) -> None:
    """ValueError naming the parameter: an unknown objective, a window outside [2, size], an ROI that is
    not four integers (top, left, height, width) inside a size x size image."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if objective == "patch":
        if isinstance(window, bool) or not isinstance(window, int) or window < 2 \
                or (size is not None and window > size):
            limit = f"[2, {size}]" if size is not None else ">= 2"
            raise ValueError(f"window must be an integer in {limit} for objective 'patch', got {window!r}")
    if objective == "roi":
        if roi is None or len(roi) != 4 or any(isinstance(v, bool) or not isinstance(v, int) for v in roi):
            raise ValueError(f"roi must be four integers [top, left, height, width], got {roi!r}")
        top, left, height, width = roi
        if top < 0 or left < 0 or height < 1 or width < 1 or \
                (size is not None and (top + height > size or left + width > size)):
            raise ValueError(f"roi {list(roi)} does not fit the {size} x {size} image" if size is not None
                             else f"roi {list(roi)} needs top, left >= 0 and height, width >= 1")


def _energy(diff: torch.Tensor) -> torch.Tensor:
    """|diff|^2 summed over channels: (N, C, n, n) -> (N, 1, n, n)."""
    return (diff.abs().square() if torch.is_complex(diff) else diff.square()).sum(dim=1, keepdim=True)


def change(objective: str, diff: torch.Tensor, clean: torch.Tensor, window: int | None = None,
           roi: Sequence[int] | None = None) -> torch.Tensor:
    """The output change the search maximises, relative to the clean output: (N,).

    diff: f(u) - f(Ax), (N, C, n, n); clean: f(Ax), (N or 1, C, n, n). "l2" gives ||diff|| / ||clean||,
    "patch" the largest window RMS of diff over the RMS of clean, "roi" ||diff on the ROI|| / ||clean||.
    """
    energy = _energy(diff)
    reference = _energy(clean).flatten(1).sum(1).expand(diff.shape[0])
    if objective == "l2":
        return (energy.flatten(1).sum(1) / reference).sqrt()
    if objective == "patch":
        local = F.avg_pool2d(energy, window, stride=1).flatten(1).amax(dim=1)
        pixels = clean.shape[-1] * clean.shape[-2]
        return (local * pixels / reference).sqrt()
    if objective == "roi":
        top, left, height, width = roi
        inside = energy[..., top:top + height, left:left + width]
        return (inside.flatten(1).sum(1) / reference).sqrt()
    raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")


def measure(objective: str, window: int | None, roi: Sequence[int] | None) -> Callable:
    """change() with the objective's settings bound: (diff, clean) -> (N,)."""
    check_objective(objective, window, roi)
    return lambda diff, clean: change(objective, diff, clean, window, roi)


def levelled_off(history: torch.Tensor, fraction: float = 0.25, rise: float = 0.01) -> torch.Tensor:
    """history: (K + 1, ...) best gain after 0..K iterations; True where the best gain after K iterations
    is less than (1 + rise) times the best gain `fraction` of the iterations earlier."""
    steps = history.shape[0] - 1
    if steps < 1:
        return torch.zeros(history.shape[1:], dtype=torch.bool, device=history.device)
    back = max(1, math.ceil(fraction * steps))
    earlier = history[steps - back]
    return history[-1] < (1 + rise) * earlier


__all__ = ["OBJECTIVES", "change", "check_objective", "levelled_off", "measure"]
