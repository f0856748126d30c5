"""DnCNN: 17 conv layers predicting the noise, subtracted from the input (residual learning)."""

from __future__ import annotations

import torch
from torch import nn

from survey.nets.layers import real_image


class DnCNN(nn.Module):
    """Denoiser f(y) = y - cnn(y); images (B, 1, n, n)."""

    def __init__(self, depth: int = 17, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        h = real_image(physics.H(y))
        return h - self.body(h)
