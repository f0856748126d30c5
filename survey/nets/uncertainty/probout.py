"""ProbOut / mean-variance estimation (Nix and Weigend; Gast and Roth): a log-variance head, trained post hoc.

Oala et al. double the network's output channels and trains mean and variance together. Here the mean
is the frozen network's own output f(y) and a small head (3 x 3 conv, ReLU, 3 x 3 conv) reads the
features entering the network's last layer and predicts the per-pixel log-variance s(y); it is
trained with the Gaussian negative log-likelihood

    1/2 mean((x - f(y))^2 exp(-s(y)) + s(y)),

base weights frozen. u(y) = exp(s(y) / 2), the predicted standard deviation (Oala et al. report the
variance; the monotone map changes Pearson correlations a little, not the ranking of images).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from survey.nets.uncertainty.base import Companion
from survey.nets.uncertainty.tail import Split

#: Clamp of the predicted log-variance (std from 4.5e-5 to 12 image units).
LOGVAR_RANGE = (-20.0, 5.0)


class ProbOutNet(Companion):
    """Mean-variance companion: mean = f(y), log-variance from a head on f's penultimate features."""

    method: ClassVar[str] = "probout"

    def __init__(self, net: nn.Module, *, hidden: int = 16, init_std: float = 0.02):
        super().__init__()
        self.split = Split(net, 1)
        channels = self.split.weight(self.split.tail_linear[0]).shape[1]
        self.head = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden, 1, 3, padding=1))
        with torch.no_grad():
            self.head[2].weight.mul_(0.1)
            self.head[2].bias.fill_(2 * math.log(init_std))

    def predict(self, y: torch.Tensor, physics) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean f(y), log-variance s(y)), each (B, 1, n, n)."""
        trunk = self.split.trunk(y, physics)
        features = self.split.run(trunk, stop_before_last=True)
        mean = self.split.run(trunk)
        return mean, self.head(features).clamp(*LOGVAR_RANGE)

    def uncertainty(self, y: torch.Tensor, physics, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.exp(0.5 * self.predict(y, physics)[1])

    def loss(self, y: torch.Tensor, physics, x: torch.Tensor, generator: torch.Generator | None = None):
        mean, logvar = self.predict(y, physics)
        return 0.5 * ((x - mean.detach()).square() * torch.exp(-logvar) + logvar).mean()

    def companion_state(self) -> dict[str, torch.Tensor]:
        return {f"head.{k}": v.detach().float().contiguous() for k, v in self.head.state_dict().items()}

    @torch.no_grad()
    def load_companion_state(self, state: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})

    @torch.no_grad()
    def test_metrics(self, y: torch.Tensor, physics, x: torch.Tensor) -> dict[str, float]:
        mean, logvar = self.predict(y, physics)
        std = torch.exp(0.5 * logvar)
        z = (x - mean).abs() / std
        nll = 0.5 * ((x - mean).square() / std.square() + logvar + math.log(2 * math.pi))
        return {"nll": float(nll.mean()), "mean_std": float(std.mean()),
                "rmse": float((x - mean).square().mean().sqrt()),
                "within_2std": float((z <= 2).float().mean())}


__all__ = ["LOGVAR_RANGE", "ProbOutNet"]
