"""A small bring-your-own network: a residual CNN on the easy reconstruction H(y).

Called as net(y, physics) -> image (B, 1, n, n), as every network of the survey is. `make_examples.py`
writes its weights (net.safetensors) and the same network as a torch.export archive and a TorchScript
file, which take the measurements y only.
"""

import torch
from torch import nn


class SmallNet(nn.Module):
    """x_hat = Re H(y) + CNN(Re H(y)): two 3x3 convolutions of `width` channels."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.Tanh(), nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        h = physics.H(y)
        h = h.real if torch.is_complex(h) else h
        return h + 0.1 * self.body(h)


def build(width: int = 8) -> SmallNet:
    """The factory the study names: `factory = "net.py:build"`."""
    return SmallNet(width)
