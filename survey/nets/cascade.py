"""Deep MRI (Schlemper et al.): a cascade of small CNNs interleaved with hard data consistency."""

from __future__ import annotations

import torch
from torch import nn

from survey.nets.layers import channels_to_complex, complex_to_channels, real_image


class DataConsistency(nn.Module):
    """Noise-free data consistency: keep the measured k-space samples, the network's elsewhere.

    x <- x + A*(y - A x), which for A = P F with orthonormal F replaces F x on the mask by y.
    Works for any operator whose A A* is a projection (single- or multi-coil Cartesian MRI).
    """

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics) -> torch.Tensor:
        return x + physics.A_adjoint(y - physics.A(x))


class Cascade(nn.Module):
    """`blocks` residual CNNs of `layers` conv layers each on (real, imaginary) channels, each followed by DC."""

    def __init__(self, blocks: int = 5, layers: int = 5, width: int = 32):
        super().__init__()

        def cnn() -> nn.Sequential:
            mods: list[nn.Module] = [nn.Conv2d(2, width, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
            for _ in range(layers - 2):
                mods += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
            mods.append(nn.Conv2d(width, 2, 3, padding=1))
            return nn.Sequential(*mods)

        self.cnns = nn.ModuleList([cnn() for _ in range(blocks)])
        self.dc = DataConsistency()

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        x = physics.A_adjoint(y)
        for cnn in self.cnns:
            x = x + channels_to_complex(cnn(complex_to_channels(x)))
            x = self.dc(x, y, physics)
        return real_image(x)
