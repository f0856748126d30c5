"""Residual U-Net on the easy reconstruction H(y): DAGAN's generator, FBPConvNet (Ell 50, Med 50), LA-CT."""

from __future__ import annotations

import torch
from torch import nn

from survey.nets.layers import complex_to_channels, magnitude, real_image


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with `depth` poolings and a global skip: out = base + unet(features).

    `input_mode`: "real" (Re H(y): FBP for Radon), "magnitude" (|A* y|, DAGAN) or "complex"
    (real and imaginary parts as two channels). Input and output images (B, 1, n, n), n divisible by 2^depth.
    """

    def __init__(self, width: int = 32, depth: int = 3, input_mode: str = "real"):
        super().__init__()
        if input_mode not in {"real", "magnitude", "complex"}:
            raise ValueError(f"input_mode must be real, magnitude or complex, got {input_mode!r}")
        self.input_mode = input_mode
        c_in = 2 if input_mode == "complex" else 1
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(c_in, widths[0])] +
                                  [_block(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_block(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.pool = nn.MaxPool2d(2)

    def features(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input channels and the image the global skip adds to."""
        if self.input_mode == "complex":
            return complex_to_channels(h if torch.is_complex(h) else torch.complex(h, torch.zeros_like(h))), real_image(h)
        base = magnitude(h) if self.input_mode == "magnitude" else real_image(h)
        return base, base

    def denoise(self, h: torch.Tensor) -> torch.Tensor:
        z, base = self.features(h)
        skips = []
        for i, block in enumerate(self.down):
            z = block(z if i == 0 else self.pool(z))
            skips.append(z)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            z = merge(torch.cat([up(z), skip], dim=1))
        return base + self.head(z)

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        return self.denoise(physics.H(y))
