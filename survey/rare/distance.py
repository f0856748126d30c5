"""Output distances D(f(y'), f(y)) for the bad event D >= delta: global and local (patch) changes.

Images are (N, C, n, n), real or complex; `reference` is the clean output f(y), (N or 1, C, n, n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relative_l2(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """||output - reference|| / ||reference|| per sample: (N,)."""
    diff = (output - reference).reshape(output.shape[0], -1)
    ref = reference.reshape(reference.shape[0], -1)
    return torch.linalg.vector_norm(diff, dim=1) / torch.linalg.vector_norm(ref, dim=1)


def patch_change(output: torch.Tensor, reference: torch.Tensor, patch: int = 8) -> torch.Tensor:
    """The largest local change: max over sliding patch x patch windows (stride 1, all channels) of
    the RMS of output - reference in the window, over the RMS of the reference over the whole image: (N,).

    A change spread evenly over the image gives the same value as `relative_l2`; a local artefact
    gives up to sqrt(n^2 / patch^2) times more, so small localised artefacts are not averaged away.
    """
    if output.ndim != 4:
        raise ValueError(f"patch_change needs images shaped (N, C, n, n), got {tuple(output.shape)}")
    size = min(patch, output.shape[-1], output.shape[-2])
    energy = (output - reference).abs().square().sum(dim=1, keepdim=True)  # (N, 1, n, n)
    local = F.avg_pool2d(energy, size, stride=1).reshape(output.shape[0], -1).amax(dim=1)
    ref = reference.abs().square().sum(dim=1).reshape(reference.shape[0], -1).mean(dim=1)
    return (local / ref).sqrt()


DISTANCES = {"relative_l2": relative_l2, "patch": patch_change}


def make_distance(name: str):
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; choose one of {sorted(DISTANCES)}")
    return DISTANCES[name]


__all__ = ["DISTANCES", "make_distance", "patch_change", "relative_l2"]
