"""Nested k-space sampling masks: `make_mask(kind, size, ratio, seed)` -> bool (n, n), DC at the centre.

Every kind draws, once per (kind, size, seed, center_fraction), a fixed priority order over its
candidates (phase-encode lines or k-space points): the fully sampled centre first (nearest to DC
first), then the rest in a random order drawn from `numpy.random.default_rng(seed)`. A mask at
ratio r keeps the first round(r * candidates) of that order, so with the same seed and kind a mask
at a lower ratio is a subset of the mask at a higher one (sampling sweeps), and the achieved ratio
is within half a line/point of the request. Masks are centred; operators `ifftshift` them.

"equispaced-lines" is the regular Cartesian pattern of the MRI-VN sweep in the paper's SI (Antun et al., PNAS 2020:
"uniformly spaced lines (center lines was always included)"): after the centre band, lines come by
lattice level, the offsets from DC that are multiples of n/2, then of n/4, n/8, ... (farthest-point order
on the periodic line index, so any n works), in a seeded random order within a level. A prefix that ends
a level is exactly the centre band plus every line c + k R (the equispaced lattice through DC); in between,
part of the next level's lattice. Nested by construction like every kind.
"""

from __future__ import annotations

import math
import numbers
import operator
from functools import lru_cache

import numpy as np
import torch

MASK_KINDS: tuple[str, ...] = ("uniform-lines", "gaussian-lines", "equispaced-lines", "random-points", "poisson-disc",
                               "radial")

#: Default side of the fully sampled centre as a fraction of n: 8 of 64 lines (as in our first
#: prototype). Radial masks have no separate centre by default: spokes oversample it.
DEFAULT_CENTER_FRACTION = {"uniform-lines": 0.125, "gaussian-lines": 0.125, "equispaced-lines": 0.125,
                           "random-points": 0.125, "poisson-disc": 0.125, "radial": 0.0}
#: Standard deviation of the line density of "gaussian-lines", as a fraction of n.
GAUSSIAN_LINES_STD = 0.2
#: "poisson-disc": the minimum distance between points grows linearly from 1x at DC to this at the corner.
POISSON_EDGE_SPREAD = 2.0


def make_mask(kind: str, size: int, ratio: float, seed: int = 0,
              center_fraction: float | None = None) -> torch.Tensor:
    """A bool mask (size, size) in centred k-space layout (DC at index size // 2 on both axes).

    ratio: fraction of k-space samples kept, in (0, 1] (lines / n for line masks, points / n^2 else).
    center_fraction: side of the fully sampled centre as a fraction of size (lines: the central band
    of round(f * n) lines; point masks: the round((f * n)^2) points nearest to DC); None = kind default.
    """
    size, seed, center_fraction = _check(kind, size, ratio, seed, center_fraction)
    order = _priority(kind, size, seed, center_fraction)
    keep = min(len(order), max(1, round(ratio * len(order))))
    chosen = np.zeros(len(order), dtype=bool)
    chosen[order[:keep]] = True
    if kind.endswith("-lines"):
        chosen = np.repeat(chosen[:, None], size, axis=1)
    return torch.from_numpy(chosen.reshape(size, size))


def integer(name: str, value, minimum: int) -> int:
    """`value` as an int >= minimum, or a ValueError naming `name` and the value."""
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer (at least {minimum}), got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _check(kind: str, size: int, ratio: float, seed: int,
           center_fraction: float | None) -> tuple[int, int, float]:
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; choose one of {list(MASK_KINDS)}")
    size = integer("mask size", size, minimum=4)
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"sampling ratio must be a number in (0, 1], got {ratio!r}")
    seed = integer("mask seed", seed, minimum=0)
    if center_fraction is None:
        center_fraction = DEFAULT_CENTER_FRACTION[kind]
    if isinstance(center_fraction, bool) or not isinstance(center_fraction, numbers.Real) \
            or not 0.0 <= center_fraction <= 1.0:
        raise ValueError(f"center_fraction must be a number in [0, 1], got {center_fraction!r}")
    return size, seed, float(center_fraction)


@lru_cache(maxsize=64)
def _priority(kind: str, n: int, seed: int, center_fraction: float) -> np.ndarray:
    """Candidate indices (rows for line masks, flat row-major points else), most important first."""
    rng = np.random.default_rng(seed)
    c = n // 2
    if kind.endswith("-lines"):
        dist = np.abs(np.arange(n) - c).astype(float)
        n_centre = round(center_fraction * n)
        if kind == "uniform-lines":
            keys = rng.random(n)
        elif kind == "equispaced-lines":  # coarser lattice level first, seeded order within a level
            keys = -_lattice_level(n) + 0.5 * rng.random(n)
        else:  # Gumbel top-k: a random order distributed as weighted draws without replacement.
            keys = -dist**2 / (2 * (GAUSSIAN_LINES_STD * n) ** 2) - np.log(-np.log(rng.random(n)))
        order = _centre_then_keys(dist, n_centre, keys)
    else:
        rows, cols = np.divmod(np.arange(n * n), n)
        dist = np.hypot(rows - c, cols - c)
        n_centre = round((center_fraction * n) ** 2)
        if kind == "random-points":
            order = _centre_then_keys(dist, n_centre, rng.random(n * n))
        elif kind == "poisson-disc":
            order = _poisson_disc_order(n, dist, _centre_then_keys(dist, n_centre, np.zeros(n * n))[:n_centre], rng)
        else:
            order = _radial_order(n, dist, _centre_then_keys(dist, n_centre, np.zeros(n * n))[:n_centre], rng)
    order.setflags(write=False)
    return order


def _centre_then_keys(dist: np.ndarray, n_centre: int, keys: np.ndarray) -> np.ndarray:
    """The n_centre candidates nearest to DC (ties by index), then the others by descending key."""
    by_dist = np.lexsort((np.arange(len(dist)), dist))
    centre = by_dist[:n_centre]
    rest = np.setdiff1d(np.arange(len(dist)), centre)
    rest = rest[np.argsort(-keys[rest], kind="stable")]
    return np.concatenate([centre, rest])


def _lattice_level(n: int) -> np.ndarray:
    """(n,) int: the lattice level of each line, by farthest-point order from DC on the periodic index.

    The line at DC is level 0; each further level holds the lines whose periodic distance to every line
    of the coarser levels is largest (for n a power of two, offsets that are odd multiples of n / 2^k
    are level k), so the lines of levels <= k are the equispaced lattice through DC.
    """
    c = n // 2
    index = np.arange(n)
    level = np.full(n, -1)
    level[c] = 0
    nearest = np.minimum(np.abs(index - c), n - np.abs(index - c))
    k = 0
    while (level < 0).any():
        k += 1
        far = nearest[level < 0].max()
        chosen = (level < 0) & (nearest == far)
        # a level takes the farthest lines that keep their mutual distance (both sides of DC at once)
        picked: list[int] = []
        for i in index[chosen]:
            if all(min(abs(i - j), n - abs(i - j)) >= far for j in picked):
                picked.append(int(i))
        level[picked] = k
        for i in picked:
            nearest = np.minimum(nearest, np.minimum(np.abs(index - i), n - np.abs(index - i)))
    return level


def _poisson_disc_order(n: int, dist: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Progressive variable-density dart throwing: every prefix of the order is Poisson-disc-like.

    Levels of shrinking radius r; at each level the remaining points, in random order, are accepted
    when no accepted point lies closer than r * spread(point), spread growing from 1 at DC to
    POISSON_EDGE_SPREAD at the corner. Once every point would pass, the rest follow in random order.
    """
    spread = (1 + (POISSON_EDGE_SPREAD - 1) * dist / dist.max()).reshape(n, n)
    nearest = np.full((n, n), np.inf)  # distance to the nearest accepted point (exact where it matters)
    taken = np.zeros((n, n), dtype=bool)
    order: list[int] = []

    def accept(flat: int, reach: int) -> None:
        i, j = divmod(int(flat), n)
        order.append(int(flat))
        taken[i, j] = True
        r0, r1, c0, c1 = max(0, i - reach), min(n, i + reach + 1), max(0, j - reach), min(n, j + reach + 1)
        di = np.arange(r0, r1)[:, None] - i
        dj = np.arange(c0, c1)[None, :] - j
        np.minimum(nearest[r0:r1, c0:c1], np.sqrt(di * di + dj * dj), out=nearest[r0:r1, c0:c1])

    radius = n / 8
    reach = math.ceil(radius * POISSON_EDGE_SPREAD)
    for flat in centre:
        accept(flat, reach)
    while radius * POISSON_EDGE_SPREAD > 1:
        need = radius * spread
        reach = math.ceil(radius * POISSON_EDGE_SPREAD)
        for flat in rng.permutation(np.flatnonzero(~taken & (nearest >= need))):
            i, j = divmod(int(flat), n)
            if nearest[i, j] >= need[i, j]:
                accept(flat, reach)
        radius *= 0.75
    rest = rng.permutation(np.flatnonzero(~taken))
    return np.concatenate([np.asarray(order, dtype=np.int64), rest])


def _radial_order(n: int, dist: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Golden-angle spokes through DC, each drawn from the centre outwards, with a random start angle.

    A prefix is the first whole spokes plus part of the next one (its inner segment), so the ratio is
    met to one point; points no spoke reaches within 4 n spokes come last, nearest to DC first.
    """
    c = n // 2
    spokes = 4 * n
    angles = rng.random() * math.pi + math.pi * (math.sqrt(5) - 1) / 2 * np.arange(spokes)
    t = np.arange(-math.ceil(n / math.sqrt(2)) - 1, math.ceil(n / math.sqrt(2)) + 1.5, 0.5)
    t = t[np.argsort(np.abs(t), kind="stable")]  # centre outwards along each spoke
    rows = np.rint(c + np.outer(np.sin(angles), t)).astype(np.int64).ravel()
    cols = np.rint(c + np.outer(np.cos(angles), t)).astype(np.int64).ravel()
    inside = (rows >= 0) & (rows < n) & (cols >= 0) & (cols < n)
    flat = np.concatenate([centre, (rows * n + cols)[inside]])
    _, first = np.unique(flat, return_index=True)
    covered = flat[np.sort(first)]
    missing = np.setdiff1d(np.arange(n * n), covered)
    missing = missing[np.lexsort((rng.random(len(missing)), dist[missing]))]
    return np.concatenate([covered, missing])


__all__ = ["MASK_KINDS", "make_mask"]
