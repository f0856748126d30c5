"""End-to-end VarNet (Sriram et al. 2020): unrolled k-space cascades with sensitivities estimated from the data.

k^{t+1} = k^t - eta_t M (k^t - y) + F E_t(U_t(R_t(F^{-1} k^t))), k^0 = y, where F is the orthonormal 2-D DFT
(the operator's own layout: DC at [0, 0]), M the sampling mask, R(x) = sum_c conj(S_c) x_c the coil
combination, E(x) = (S_c x)_c the expansion, U_t a normalised fastMRI U-Net on (real, imaginary) channels and
eta_t a learned soft data-consistency weight. The maps S are estimated by a small U-Net from the
auto-calibration (ACS) lines only (the contiguous fully sampled band around DC), coil by coil, and
normalised to sum_c |S_c|^2 = 1. Output: the root-sum-of-squares of the coil images of k^T, (B, 1, n, n).
A single-coil operator (y of shape (B, 1, n, n)) uses S = 1 and no estimation.
"""

from __future__ import annotations

import torch
from torch import nn

from survey.nets.fastmri_unet import FastMRIUNetCore


def fft2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DFT over the last two axes, DC at [0, 0] (the layout of survey.physics' k-space)."""
    return torch.fft.fft2(x, norm="ortho")


def ifft2(k: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(k, norm="ortho")


def rss(coil_images: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Root-sum-of-squares over the coil axis: (B, C, n, n) complex -> (B, 1, n, n) real (eps keeps gradients finite)."""
    return torch.sqrt(coil_images.abs().square().sum(dim=1, keepdim=True) + eps)


def acs_mask(physics) -> torch.Tensor:
    """Bool (n, n), FFT layout: the contiguous band of fully sampled lines around DC (the ACS lines)."""
    centred = physics.mask  # (n, n), DC at n // 2
    axis = getattr(physics, "line_axis", -2)
    lines = centred.all(dim=0) if axis == -1 else centred.all(dim=1)  # per line: fully sampled
    n = lines.numel()
    lo = hi = n // 2
    if not bool(lines[n // 2]):
        raise ValueError("the mask does not sample the DC line: no auto-calibration lines to estimate "
                         "sensitivities from")
    while lo > 0 and bool(lines[lo - 1]):
        lo -= 1
    while hi < n - 1 and bool(lines[hi + 1]):
        hi += 1
    band = torch.zeros(n, dtype=torch.bool, device=centred.device)
    band[lo:hi + 1] = True
    full = band[None, :].expand(n, n) if axis == -1 else band[:, None].expand(n, n)
    return torch.fft.ifftshift(full, dim=(-2, -1))


class NormUNet(nn.Module):
    """Complex (N, 1, n, n) -> complex (N, 1, n, n): a fastMRI U-Net on standardised (real, imaginary) channels."""

    def __init__(self, chans: int, pools: int):
        super().__init__()
        self.unet = FastMRIUNetCore(2, 2, chans, pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([x.real, x.imag], dim=1)
        mean = z.mean(dim=(-2, -1), keepdim=True)
        std = z.std(dim=(-3, -2, -1), keepdim=True) + 1e-6
        z = self.unet((z - mean) / std) * std + mean
        return torch.complex(z[:, :1], z[:, 1:2])


class SensitivityModel(nn.Module):
    """Coil maps (B, C, n, n) complex from the ACS lines of y (B, C, n, n), normalised to sum_c |S_c|^2 = 1."""

    def __init__(self, chans: int = 8, pools: int = 4):
        super().__init__()
        self.refine = NormUNet(chans, pools)

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        b, c, n, _ = y.shape
        low = ifft2(y * acs_mask(physics).to(y.device))
        maps = self.refine(low.reshape(b * c, 1, n, n)).reshape(b, c, n, n)
        return maps / rss(maps)


class Cascade(nn.Module):
    """One k-space cascade: soft data consistency plus a U-Net refinement in the coil-combined image."""

    def __init__(self, chans: int, pools: int):
        super().__init__()
        self.refine = NormUNet(chans, pools)
        self.dc_weight = nn.Parameter(torch.ones(()))

    def forward(self, k: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        dc = torch.where(mask, k - y, torch.zeros_like(k)) * self.dc_weight
        combined = (ifft2(k) * maps.conj()).sum(dim=1, keepdim=True)
        return k - dc - fft2(self.refine(combined) * maps)


class E2EVarNet(nn.Module):
    """`cascades` k-space cascades of `chans`-channel U-Nets; maps from a `sens_chans`-channel U-Net on the ACS lines.

    `net(y, physics) -> image`: y (B, C, n, n) complex k-space in the operator's layout (zeros off the
    mask), image (B, 1, n, n) real (root-sum-of-squares). Needs a Fourier operator (`sampling`, `mask`).
    """

    def __init__(self, cascades: int = 4, chans: int = 18, pools: int = 4, sens_chans: int = 8, sens_pools: int = 4):
        super().__init__()
        if cascades < 1:
            raise ValueError(f"cascades must be >= 1, got {cascades}")
        self.cascades = nn.ModuleList([Cascade(chans, pools) for _ in range(cascades)])
        self.sensitivity = SensitivityModel(sens_chans, sens_pools)

    def maps(self, y: torch.Tensor, physics) -> torch.Tensor:
        """Estimated coil maps (B, C, n, n); ones for a single coil."""
        if y.shape[1] == 1:
            return torch.ones_like(y)
        return self.sensitivity(y, physics)

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        if not torch.is_complex(y):
            y = torch.complex(y, torch.zeros_like(y))
        mask = physics.sampling.to(y.device)
        maps = self.maps(y, physics)
        k = y
        for cascade in self.cascades:
            k = cascade(k, y, mask, maps)
        return rss(ifft2(k))


__all__ = ["E2EVarNet", "SensitivityModel", "acs_mask", "rss"]
