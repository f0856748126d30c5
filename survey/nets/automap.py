"""AUTOMAP (Zhu et al.): dense layers map the sampled k-space values to an image, convolutions refine it."""

from __future__ import annotations

import torch
from torch import nn


class Automap(nn.Module):
    """Input: the m sampled (complex) measurements as 2m reals; two tanh dense layers to n*n, then
    two 5x5 conv layers (64 channels, ReLU) and a 7x7 transposed conv to one channel. Output (B, 1, n, n).

    The sampled positions are fixed at construction (the network is tied to its sampling pattern);
    they are found as the non-zero entries of A applied to a random complex probe.
    """

    def __init__(self, physics, hidden_scale: float = 1.0, conv_width: int = 64):
        super().__init__()
        n = physics.size
        probe = torch.randn(1, 1, n, n, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = physics.to("cpu").A(probe)
        index = torch.nonzero(y.reshape(-1).abs() > 0).squeeze(1)
        self.register_buffer("index", index)
        m, hidden = index.numel(), int(hidden_scale * n * n)
        self.size = n
        self.dense = nn.Sequential(nn.Linear(2 * m, hidden), nn.Tanh(), nn.Linear(hidden, n * n), nn.Tanh())
        self.conv = nn.Sequential(
            nn.Conv2d(1, conv_width, 5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(conv_width, conv_width, 5, padding=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(conv_width, 1, 7, padding=3),
        )

    def forward(self, y: torch.Tensor, physics=None) -> torch.Tensor:
        b = y.shape[0]
        samples = y.reshape(b, -1)[:, self.index]
        samples = torch.view_as_real(samples).reshape(b, -1) if torch.is_complex(samples) else samples
        z = self.dense(samples.to(self.dense[0].weight.dtype)).reshape(b, 1, self.size, self.size)
        return z + self.conv(z)
