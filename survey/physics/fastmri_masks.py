"""fastMRI's column masks: `make_fastmri_mask(kind, size, acceleration, center_fraction, seed, offset)`.

The semantics of the fastMRI repository's `fastmri/data/subsample.py` (Zbontar et al. 2018), for one
(center_fraction, acceleration) pair, on the phase-encode columns (the last axis of fastMRI's k-space):

- centre: num_low = round(n * center_fraction) adjacent columns from pad = (n - num_low + 1) // 2;
- "fastmri-random" (RandomMaskFunc): every column independently with probability
  (n / acceleration - num_low) / (n - num_low), so the expected count is n / acceleration;
- "fastmri-equispaced" (EquispacedMaskFractionFunc, the "equispaced" of fastMRI <= 0.1): columns
  round(offset + k * a) for 0 <= offset + k * a < n - 1 with the adjusted acceleration
  a = acceleration (num_low - n) / (num_low acceleration - n), so that centre plus lattice is about
  n / acceleration columns; offset drawn in [0, round(a)) unless given.

Draws replay fastMRI's own: `numpy.random.RandomState(seed)`, one `randint(1)` for the choice of the
(only) pair, then the uniform draws or the offset, so `MaskFunc([cf], [acc])(shape, seed=seed)` gives
the same columns. Masks are bool (n, n) in centred layout (DC at column n // 2), whole columns sampled.
These masks are not nested across accelerations; a sweep moves the acceleration (ratio = 1 / acceleration).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

FASTMRI_MASK_KINDS: tuple[str, ...] = ("fastmri-equispaced", "fastmri-random")
#: fastMRI's standard pairs (acceleration -> centre fraction) used when no center_fraction is given.
STANDARD_CENTER_FRACTIONS = {4: 0.08, 8: 0.04}
DEFAULT_ACCELERATION = 4.0


def is_fastmri_kind(kind: str) -> bool:
    return kind in FASTMRI_MASK_KINDS


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's pair for 4x (0.08) and 8x (0.04); 0.32 / acceleration otherwise (the same rule)."""
    return STANDARD_CENTER_FRACTIONS.get(acceleration, 0.32 / acceleration)


def make_fastmri_columns(kind: str, n: int, acceleration: float = DEFAULT_ACCELERATION,
                         center_fraction: float | None = None, seed: int = 0,
                         offset: int | None = None) -> np.ndarray:
    """Bool (n,) over the columns, centred (DC at n // 2), as fastMRI's mask functions draw it."""
    acceleration, center_fraction, seed = _check(kind, n, acceleration, center_fraction, seed, offset)
    rng = np.random.RandomState(seed)
    rng.randint(1)  # fastMRI's choose_acceleration draws the pair even when there is one
    num_low = round(n * center_fraction)
    mask = np.zeros(n, dtype=bool)
    pad = (n - num_low + 1) // 2
    mask[pad:pad + num_low] = True
    if kind == "fastmri-random":
        if num_low >= n:
            return mask
        prob = (n / acceleration - num_low) / (n - num_low)
        return mask | (rng.uniform(size=n) < prob)
    adjusted = adjusted_acceleration(n, acceleration, num_low)
    if offset is None:
        offset = rng.randint(0, high=max(1, round(adjusted)))
    mask[np.around(np.arange(offset, n - 1, adjusted)).astype(np.int64)] = True
    return mask


def adjusted_acceleration(n: int, acceleration: float, num_low: int) -> float:
    """Spacing of the equispaced lattice so that num_low centre columns plus the lattice give about
    n / acceleration columns (fastMRI's adjusted_accel); needs num_low < n / acceleration."""
    if num_low * acceleration >= n:
        raise ValueError(f"center_fraction leaves no room for the lattice: {num_low} centre columns of {n} "
                         f"already reach acceleration {acceleration}")
    return acceleration * (num_low - n) / (num_low * acceleration - n)


def make_fastmri_mask(kind: str, size: int, acceleration: float = DEFAULT_ACCELERATION,
                      center_fraction: float | None = None, seed: int = 0,
                      offset: int | None = None) -> torch.Tensor:
    """Bool (size, size) centred mask sampling whole columns (fastMRI's phase-encode axis)."""
    columns = make_fastmri_columns(kind, size, acceleration, center_fraction, seed, offset)
    return torch.from_numpy(np.repeat(columns[None, :], size, axis=0))


def _check(kind: str, n: int, acceleration, center_fraction, seed, offset) -> tuple[float, float, int]:
    if kind not in FASTMRI_MASK_KINDS:
        raise ValueError(f"unknown fastMRI mask kind {kind!r}; choose one of {list(FASTMRI_MASK_KINDS)}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 4:
        raise ValueError(f"mask size must be an integer of at least 4, got {n!r}")
    if isinstance(acceleration, bool) or not isinstance(acceleration, numbers.Real) or not acceleration >= 1:
        raise ValueError(f"acceleration must be a number >= 1, got {acceleration!r}")
    acceleration = float(acceleration)
    if center_fraction is None:
        center_fraction = default_center_fraction(acceleration)
    if isinstance(center_fraction, bool) or not isinstance(center_fraction, numbers.Real) \
            or not 0.0 <= center_fraction <= 1.0:
        raise ValueError(f"center_fraction must be a number in [0, 1], got {center_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"mask seed must be an integer >= 0, got {seed!r}")
    if offset is not None:
        if kind != "fastmri-equispaced":
            raise ValueError("offset applies to 'fastmri-equispaced' masks only")
        if isinstance(offset, bool) or not isinstance(offset, numbers.Integral) or not 0 <= offset < n - 1:
            raise ValueError(f"offset must be an integer in [0, {n - 1}), got {offset!r}")
    return acceleration, float(center_fraction), int(seed)


__all__ = ["FASTMRI_MASK_KINDS", "adjusted_acceleration", "default_center_fraction", "is_fastmri_kind",
           "make_fastmri_columns", "make_fastmri_mask"]
