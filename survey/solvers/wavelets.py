"""Orthogonal periodised 2-D discrete wavelet transform in torch (Daubechies / symlet filters).

PyWavelets supplies only the filter coefficients; the transform runs in torch, so it is batched,
differentiable and follows the input's device and dtype. One analysis level is a stride-2
`conv2d` of the circularly padded image with the four separable filter products; one synthesis
level is its exact adjoint written in polyphase form (a `conv2d` on the four circularly padded
sub-bands followed by `pixel_shuffle`), which is several times faster on CPU than
`conv_transpose2d`. With periodisation the transform is an orthogonal n^2 x n^2 matrix:
`inverse` is both W^T and W^{-1}.

Coefficients are returned in the Mallat layout, the same shape as the image: after `levels`
levels the coarse approximation sits in the top-left (H / 2^levels, W / 2^levels) block; at each
level the block right of it holds (low along rows, high along columns), the block below it
(high, low), and the diagonal block (high, high). The values equal
`pywt.coeffs_to_array(pywt.wavedec2(x, wavelet, mode="periodization", level=levels))[0]`.
"""

from __future__ import annotations

import pywt
import torch
import torch.nn.functional as F
from torch import nn


def _circular_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Periodic extension of (M, C, H, W) by `left` / `right` pixels before / after, on both axes."""
    if left == 0 and right == 0:
        return x
    h, w = x.shape[-2:]
    if max(left, right) <= min(h, w):
        return F.pad(x, (left, right, left, right), mode="circular")
    rows = (torch.arange(-left, h + right, device=x.device)) % h
    cols = (torch.arange(-left, w + right, device=x.device)) % w
    return x.index_select(-2, rows).index_select(-1, cols)


def _synthesis_taps(dec: list[list[float]]) -> tuple[torch.Tensor, int, int]:
    """1-D polyphase taps of the adjoint of one periodised analysis step.

    Analysis: c_beta[k] = sum_j f_beta[j] x[(2k + s - j) mod N], s = L / 2 (PyWavelets' alignment),
    beta in {lo, hi}. Its adjoint at m = 2r + a (a in {0, 1}) reads
    x[2r + a] = sum_beta sum_i f_beta[j0 + 2i] c_beta[r + off_a + i], j0 = (s - a) mod 2,
    off_a = (a + j0 - s) / 2. Both phases are written as one correlation over a common window.
    Returns taps (2 phases, 2 bands, width), and the circular padding (left, right) of c.
    """
    length = len(dec[0])
    s = length // 2
    phases = []
    for a in (0, 1):
        j0 = (s - a) % 2
        phases.append((j0, (a + j0 - s) // 2))
    low = min(off for _, off in phases)
    high = max(off for _, off in phases) + (length - 1) // 2
    width = high - low + 1
    taps = torch.zeros(2, 2, width, dtype=torch.float64)
    for a, (j0, off) in enumerate(phases):
        for beta in (0, 1):
            for i in range((length - j0 + 1) // 2):
                taps[a, beta, off + i - low] = dec[beta][j0 + 2 * i]
    return taps, -low, high


def _analysis_level(x: torch.Tensor, bank: "Wavelet2D") -> torch.Tensor:
    """One analysis level, (M, 1, H, W) -> (M, 1, H, W) in the Mallat layout."""
    pad = bank.analysis.shape[-1] // 2 - 1
    c = F.conv2d(_circular_pad(x, pad, pad), bank.analysis.to(x.device, x.dtype), stride=2)  # (M, 4, H/2, W/2)
    top = torch.cat([c[:, 0:1], c[:, 1:2]], dim=-1)
    bottom = torch.cat([c[:, 2:3], c[:, 3:4]], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def _synthesis_level(c: torch.Tensor, bank: "Wavelet2D") -> torch.Tensor:
    """Adjoint (= inverse) of `_analysis_level`, (M, 1, H, W) -> (M, 1, H, W)."""
    h, w = c.shape[-2] // 2, c.shape[-1] // 2
    bands = torch.cat([c[:, :, :h, :w], c[:, :, :h, w:], c[:, :, h:, :w], c[:, :, h:, w:]], dim=1)
    bands = _circular_pad(bands, bank.synthesis_pad[0], bank.synthesis_pad[1])
    phases = F.conv2d(bands, bank.synthesis.to(c.device, c.dtype))  # (M, 4 = (row phase, col phase), h, w)
    return F.pixel_shuffle(phases, 2)


def _forward(x: torch.Tensor, bank: "Wavelet2D", levels: int) -> torch.Tensor:
    c = _analysis_level(x, bank)
    if levels == 1:
        return c
    h, w = c.shape[-2] // 2, c.shape[-1] // 2
    top = torch.cat([_forward(c[..., :h, :w], bank, levels - 1), c[..., :h, w:]], dim=-1)
    return torch.cat([top, c[..., h:, :]], dim=-2)


def _inverse(c: torch.Tensor, bank: "Wavelet2D", levels: int) -> torch.Tensor:
    if levels > 1:
        h, w = c.shape[-2] // 2, c.shape[-1] // 2
        top = torch.cat([_inverse(c[..., :h, :w], bank, levels - 1), c[..., :h, w:]], dim=-1)
        c = torch.cat([top, c[..., h:, :]], dim=-2)
    return _synthesis_level(c, bank)


class Wavelet2D(nn.Module):
    """W: (..., H, W) -> (..., H, W) coefficients in the Mallat layout; orthogonal, so W^T = W^{-1}.

    Real float32/float64 or complex inputs (applied to real and imaginary parts). H and W must be
    divisible by 2^levels. `forward` is the analysis W, `inverse` (alias `adjoint`) the synthesis.
    """

    def __init__(self, wavelet: str = "db2", levels: int = 3):
        super().__init__()
        try:
            filters = pywt.Wavelet(wavelet)
        except ValueError as exc:
            raise ValueError(f"wavelet {wavelet!r} is not a PyWavelets wavelet: {exc}") from None
        if not filters.orthogonal:
            raise ValueError(f"wavelet {wavelet!r} is not orthogonal; use a Daubechies (dbN), symlet or coiflet")
        if isinstance(levels, bool) or int(levels) != levels or levels < 1:
            raise ValueError(f"wavelet levels must be a positive integer, got {levels!r}")
        self.wavelet = wavelet
        self.levels = int(levels)
        dec = [list(filters.dec_lo), list(filters.dec_hi)]
        # conv2d correlates, so reversed taps make it a convolution; products over (rows, columns).
        rev = torch.tensor([d[::-1] for d in dec], dtype=torch.float64)
        analysis = torch.stack([torch.outer(a, b) for a in rev for b in rev]).unsqueeze(1)  # (4, 1, L, L)
        taps, left, right = _synthesis_taps(dec)
        # out channel (row phase a, column phase b); in channel (row band, column band).
        synthesis = torch.einsum("apu,bqv->abpquv", taps, taps).reshape(4, 4, *taps.shape[-1:] * 2)
        self.register_buffer("analysis", analysis, persistent=False)
        self.register_buffer("synthesis", synthesis, persistent=False)
        self.synthesis_pad = (left, right)

    def extra_repr(self) -> str:
        return f"wavelet={self.wavelet!r}, levels={self.levels}"

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim < 2:
            raise ValueError(f"wavelet transform needs (..., H, W) input, got shape {tuple(x.shape)}")
        factor = 2 ** self.levels
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by 2^levels = {factor} "
                             f"({self.wavelet}, levels={self.levels}); pad the image or use fewer levels")

    def _run(self, fn, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if torch.is_complex(x):
            return torch.complex(self._run(fn, x.real), self._run(fn, x.imag))
        flat = x.reshape(-1, 1, *x.shape[-2:])
        return fn(flat, self, self.levels).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Analysis W x."""
        return self._run(_forward, x)

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        """Synthesis W^T c = W^{-1} c."""
        return self._run(_inverse, c)

    adjoint = inverse

    def detail_mask(self, shape: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
        """(H, W) tensor: 0 on the coarse approximation block, 1 on every detail coefficient."""
        h, w = shape
        mask = torch.ones(h, w, device=device, dtype=dtype)
        mask[: h >> self.levels, : w >> self.levels] = 0
        return mask
