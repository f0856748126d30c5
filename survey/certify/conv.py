"""Certified operator norms of 2-D convolutions: zero-padded or circular, strided, dilated, grouped, transposed.

A convolution with stride s on an N x N torus (N a multiple of s) splits its input into s^2 phases
x_q[m] = x[s m + q]; tap a (offset t = a - p from the output position s i) reads phase q = t mod s at
m = i + floor(t / s), so the strided convolution is a stride-1 circular convolution of the (C_in s^2)-channel
phase image on the (N/s)-torus, block-diagonal in its DFT basis (Sedghi, Gupta and Long, ICLR 2019, for
s = 1): its norm is exactly max over the (N/s)^2 frequencies w of ||K(w)||_2, K(w) the (C_out, C_in s^2)
matrix sum_taps w_tap e^{2 pi i <w, m_tap> / (N/s)}.

Zero padding: on an input of size n with padding p, every tap reads x_ext at indices in [-p, n + p - 1]; on
a torus with N >= n + 2p + k those indices are distinct mod N and those outside [0, n) hold the zeros of
the embedding, so the zero-padded convolution is (crop) (torus convolution) (embed), whose norm is at most
the torus's: the padding correction is the larger torus. A transposed convolution is the adjoint of the
convolution with its weight, stride and padding (output_padding only adds rows the adjoint ignores), with
the same norm. The largest ||K(w)|| is bounded (survey.certify.spectral), after an entrywise bound
on the rounding of the tap sums (at most (T + 8) u sum |w_tap| per entry, T taps) is added by Weyl's
inequality; groups are blocks, the largest counts. All blocks are certified at once against one shift by
batched Cholesky factorisations (survey.certify.spectral.max_bound).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from survey.certify.spectral import UNIT, max_bound

#: Complex entries of K(w) built at once (memory: 16 bytes each).
CHUNK = 1 << 23


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def conv_bound(weight: torch.Tensor, size: tuple[int, int] | int, *, stride=1, padding=0, dilation=1,
               groups: int = 1, circular: bool = False) -> float:
    """Certified norm of x -> conv2d(x, weight, stride, padding, dilation, groups) on (1, C_in, *size)
    inputs (zero padding, or circular padding when `circular`: then the torus is the image itself and the
    bound is exact up to rounding, which needs stride | size). weight: (C_out, C_in / groups, kh, kw)."""
    size, stride, padding, dilation = _pair(size), _pair(stride), _pair(padding), _pair(dilation)
    w = weight.detach().to("cpu", torch.float64)
    if any(d != 1 for d in dilation):  # a dilated kernel is the kernel with zeros between its taps
        kh, kw = w.shape[-2:]
        big = torch.zeros(*w.shape[:2], dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1, dtype=w.dtype)
        big[..., ::dilation[0], ::dilation[1]] = w
        w = big
    out_per_group = w.shape[0] // groups
    return max(_group_bound(w[g * out_per_group:(g + 1) * out_per_group], size, stride, padding, circular)
               for g in range(groups))


def _torus(n: int, k: int, s: int, p: int, circular: bool) -> int:
    if circular:
        if n % s:
            raise ValueError(f"conv_bound: circular padding needs the stride {s} to divide the size {n}")
        return n
    return s * math.ceil((n + 2 * p + k) / s)


def _group_bound(w: torch.Tensor, size, stride, padding, circular: bool) -> float:
    c_out, c_in, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    nh, nw = _torus(size[0], kh, sh, ph, circular), _torus(size[1], kw, sw, pw, circular)
    mh, mw = nh // sh, nw // sw
    # per tap: its phase and its offset on the phase torus
    ta, tb = torch.arange(kh) - ph, torch.arange(kw) - pw
    qa, da = ta % sh, torch.div(ta, sh, rounding_mode="floor")
    qb, db = tb % sw, torch.div(tb, sw, rounding_mode="floor")
    # K(w)[o, (c, qa, qb)] = sum over taps with those phases of w[o, c, a, b] e^{2 pi i (wh da + ww db) / M}
    taps = kh * kw
    phase_index = (qa.view(-1, 1) * sw + qb.view(1, -1)).reshape(-1)  # (taps,)
    placed = torch.zeros(taps, c_out, c_in, sh * sw, dtype=torch.float64)
    flat = w.permute(2, 3, 0, 1).reshape(taps, c_out, c_in)
    placed[torch.arange(taps), :, :, phase_index] = flat
    placed = placed.reshape(taps, -1)
    # rounding of the tap sums (entrywise), as a Frobenius norm: Weyl adds it to every block's sigma_1
    abs_sum = placed.abs().sum(0)
    slack = float((taps + 8) * UNIT * torch.linalg.vector_norm(abs_sum)) * (1 + 1e-12)
    fh = torch.arange(mh, dtype=torch.float64)
    fw = torch.arange(mw, dtype=torch.float64)
    off_h = (da % mh).to(torch.float64)
    off_w = (db % mw).to(torch.float64)
    entries = placed.shape[1]
    per = max(1, CHUNK // max(entries, 1))
    freqs = torch.cartesian_prod(fh, fw)  # (F, 2)
    best = 0.0
    for part in freqs.split(per):
        # exponent (wh * da mod mh) / mh: reduced first so the angle stays small and accurate
        ah = torch.remainder(part[:, :1] * off_h.view(1, -1), mh) / mh     # (F, kh)
        aw = torch.remainder(part[:, 1:] * off_w.view(1, -1), mw) / mw     # (F, kw)
        angle = 2 * math.pi * (ah.unsqueeze(2) + aw.unsqueeze(1)).reshape(part.shape[0], taps)
        phase = torch.polar(torch.ones_like(angle), angle)                   # (F, taps)
        blocks = (phase @ placed.to(torch.complex128)).view(-1, c_out, c_in * sh * sw)
        best = max(best, max_bound(blocks))
    return best + slack


def module_bound(conv: nn.Module, size: int | tuple[int, int], scale: torch.Tensor | None = None) -> float:
    """Certified norm of a Conv2d / ConvTranspose2d (bias dropped; its output channels scaled by `scale`,
    e.g. a folded eval-mode BatchNorm) on inputs of spatial size `size`."""
    weight = conv.weight.detach().to("cpu", torch.float64)
    transposed = isinstance(conv, nn.ConvTranspose2d)
    if scale is not None:
        scale = scale.detach().to("cpu", torch.float64)
        weight = weight * (scale.view(1, -1, 1, 1) if transposed else scale.view(-1, 1, 1, 1))
    if conv.padding_mode not in ("zeros", "circular"):
        raise ValueError(f"no certified rule for {type(conv).__name__} with padding_mode={conv.padding_mode!r}")
    if isinstance(conv.padding, str):
        raise ValueError(f"no certified rule for {type(conv).__name__} with padding={conv.padding!r}")
    size = _pair(size)
    if transposed:
        if conv.padding_mode != "zeros":
            raise ValueError("ConvTranspose2d supports only zero padding")
        k, s, p, d, op = (_pair(conv.kernel_size), _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation),
                          _pair(conv.output_padding))
        out = tuple((size[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in range(2))
        # conv_transpose2d(., W) is the adjoint of conv2d(., W) on the transposed output (W read as
        # (C_out, C_in / groups) of that conv2d): the same norm
        groups = conv.groups
        return conv_bound(weight, out, stride=s, padding=p, dilation=d, groups=groups)
    return conv_bound(weight, size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                      groups=conv.groups, circular=conv.padding_mode == "circular")


__all__ = ["conv_bound", "module_bound"]
