"""The fastMRI U-Net baseline (Zbontar et al. 2018; Ronneberger et al. 2015) and its image-domain wrapper.

`FastMRIUNetCore` is the architecture of fastMRI's `models/unet.py`: `pools` down-sampling levels of
two 3 x 3 convolutions (no bias) + instance norm + LeakyReLU(0.2) + dropout, channels doubling from
`chans`, a bottom block, transposed-convolution up-sampling with skip concatenation and a final 1 x 1
convolution. With chans = 32 and 4 pools it has about 7.8M parameters. Images of any size work: the
decoder pads (reflect) where an odd size was halved. Written from the paper's description, not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from survey.nets.layers import magnitude


def _conv_block(c_in: int, c_out: int, drop: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.InstanceNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True),
        nn.Dropout2d(drop),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.InstanceNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True),
        nn.Dropout2d(drop),
    )


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False), nn.InstanceNorm2d(c_out),
                         nn.LeakyReLU(0.2, inplace=True))


class FastMRIUNetCore(nn.Module):
    """(B, in_chans, h, w) -> (B, out_chans, h, w): fastMRI's U-Net, `pools` levels from `chans` channels."""

    def __init__(self, in_chans: int = 1, out_chans: int = 1, chans: int = 32, pools: int = 4, drop: float = 0.0):
        super().__init__()
        if pools < 1 or chans < 1:
            raise ValueError(f"chans and pools must be >= 1, got chans={chans}, pools={pools}")
        widths = [chans * 2 ** i for i in range(pools)]
        self.down = nn.ModuleList([_conv_block(in_chans, widths[0], drop)] +
                                  [_conv_block(widths[i - 1], widths[i], drop) for i in range(1, pools)])
        self.bottom = _conv_block(widths[-1], 2 * widths[-1], drop)
        self.up = nn.ModuleList([_up_block(2 * w, w) for w in reversed(widths)])
        self.merge = nn.ModuleList([_conv_block(2 * w, w, drop) for w in reversed(widths)])
        self.head = nn.Conv2d(widths[0], out_chans, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            z = block(z)
            skips.append(z)
            z = F.avg_pool2d(z, 2)
        z = self.bottom(z)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            z = up(z)
            dh, dw = skip.shape[-2] - z.shape[-2], skip.shape[-1] - z.shape[-1]
            if dh or dw:  # an odd size was halved: pad back to the skip's size
                z = F.pad(z, [0, dw, 0, dh], mode="reflect")
            z = merge(torch.cat([z, skip], dim=1))
        return self.head(z)


def normalize(z: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image standardisation (fastMRI's instance normalisation): (z - mean) / std, mean and std (B, 1, 1, 1)."""
    mean = z.mean(dim=(-3, -2, -1), keepdim=True)
    std = z.std(dim=(-3, -2, -1), keepdim=True) + eps
    return (z - mean) / std, mean, std


class FastMRIUNet(nn.Module):
    """fastMRI's single- and multi-coil U-Net baseline as `net(y, physics) -> image` (B, 1, n, n), real.

    Input: the magnitude of the easy reconstruction |H(y)| (single coil: zero filling; multi-coil: the
    coil-combined zero filling of the operator), standardised per image; output mapped back to that
    image's scale. No global skip, as in fastMRI's baseline.
    """

    def __init__(self, chans: int = 32, pools: int = 4, drop: float = 0.0):
        super().__init__()
        self.unet = FastMRIUNetCore(1, 1, chans, pools, drop)

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        z, mean, std = normalize(magnitude(physics.H(y)))
        return self.unet(z) * std + mean


__all__ = ["FastMRIUNet", "FastMRIUNetCore", "normalize"]
