"""S(z) = D(f(apply(y, z, severity, physics)), f(y)) for one image: the score the estimators sample."""

from __future__ import annotations

from typing import Callable

import torch

from survey.rare.distance import relative_l2
from survey.rare.threads import bookkeeping, network


def perturbation_score(net: Callable, physics, y: torch.Tensor, family, severity, *,
                       distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = relative_l2,
                       batch: int = 64, clean: torch.Tensor | None = None,
                       x: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A batched score z (N, d) -> (N,) for one image's clean measurements y (1, *measurement_shape).

    net(y, physics) -> image; severity in the family's physical unit (a float or a (1,)-shaped
    tensor: one image); the network runs `batch` latents at a time. Gradients flow when the caller
    enables them (importance sampling); the clean output f(y) is computed once (or passed as `clean`).
    x: the object (1, 1, n, n), handed on to families that need it (`needs_image`, physical families).
    Counting calls is the estimators' job (one score value = one network evaluation). The perturbation and
    the distance run on one CPU thread, the network on the caller's threads (survey.rare.threads).
    """
    if y.shape[0] != 1:
        raise ValueError("perturbation_score scores one image: y must have batch 1")
    if clean is None:
        with torch.no_grad():
            clean = net(y, physics)
    clean = clean.detach()

    def score(z: torch.Tensor) -> torch.Tensor:
        out = []
        with bookkeeping():
            for part in z.split(batch):
                perturbed = family.perturb(y, part.to(y.device), severity, physics, x=x)
                with network():
                    image = net(perturbed, physics)
                out.append(distance(image, clean))
            return torch.cat(out)

    return score


__all__ = ["perturbation_score"]
