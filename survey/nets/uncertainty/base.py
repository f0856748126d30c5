"""The companion contract: an uncertainty model attached to a frozen reconstruction network."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn


class Companion(nn.Module, abc.ABC):
    """An uncertainty companion of a frozen network f (the network's weights are never trained here).

    `uncertainty(y, physics, generator) -> u` (B, 1, n, n), a per-pixel score, differentiable in y
    (the adaptive attack needs its gradient); randomness (MC dropout masks) only from `generator`.
    `loss(y, physics, x, generator)` is the post-hoc training loss on (y, x) pairs; `project_()`
    restores constraints after an optimiser step; `companion_state()` / `load_companion_state()`
    are the tensors stored in the companion's safetensors file (the base network's are not).
    """

    method: ClassVar[str]

    @abc.abstractmethod
    def uncertainty(self, y: torch.Tensor, physics, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-pixel uncertainty u(y), (B, 1, n, n)."""

    @abc.abstractmethod
    def loss(self, y: torch.Tensor, physics, x: torch.Tensor, generator: torch.Generator | None = None):
        """Scalar training loss on a batch."""

    def project_(self) -> None:
        """Restore constraints after an optimiser step (none by default)."""

    @abc.abstractmethod
    def companion_state(self) -> dict[str, torch.Tensor]:
        """The companion's own tensors, as stored."""

    @abc.abstractmethod
    def load_companion_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of companion_state."""

    def trainable(self) -> list[nn.Parameter]:
        """Parameters the recipe trains (the base network's are frozen)."""
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def test_metrics(self, y: torch.Tensor, physics, x: torch.Tensor) -> dict[str, float]:
        """Method-specific quality numbers for the card, on a held-out batch."""
        return {"mean_u": float(self.uncertainty(y, physics, torch.Generator(device=y.device).manual_seed(0)).mean())}


def draw_mask(shape, p: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted-dropout mask (0 with probability p, else 1 / (1 - p)) drawn from `generator`."""
    device = generator.device if generator is not None else like.device
    keep = torch.rand(shape, generator=generator, device=device, dtype=like.dtype) >= p
    return (keep.to(like.dtype) / (1.0 - p)).to(like.device)


__all__ = ["Companion", "draw_mask"]
