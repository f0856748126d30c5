"""Single-coil Cartesian MRI: A x = P F x with the orthonormal 2-D DFT F and a k-space mask P.

Measurements stay on the full (B, 1, n, n) complex grid with zeros off the mask (so A = P* P F and
A* y = F* (P y)); H = A* is the zero-filled reconstruction. Masks come from `survey.physics.masks`
(nested masks at a sampling ratio) or `survey.physics.fastmri_masks` (fastMRI's column masks at an
acceleration). Images may be complex (raw fastMRI k-space, `survey.data.fastmri` with source="kspace").
"""

from __future__ import annotations

from typing import ClassVar

import torch

from survey.physics.base import Axis, LinearPhysics
from survey.physics.fastmri_masks import (DEFAULT_ACCELERATION, default_center_fraction, is_fastmri_kind,
                                          make_fastmri_mask)
from survey.physics.masks import DEFAULT_CENTER_FRACTION, make_mask

#: Sampling ratio of the nested mask kinds when none is given.
DEFAULT_RATIO = 0.25


def fft_ready(x: torch.Tensor, what: str = "input") -> torch.Tensor:
    """x in a dtype torch.fft handles at full speed: float32/64 or complex64/128 kept, half -> 32 bits."""
    if torch.is_complex(x):
        return x if x.dtype in (torch.complex64, torch.complex128) else x.to(torch.complex64)
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected a floating-point or complex tensor, got {x.dtype}")
    return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DFT over the last two axes, DC at index [0, 0] (FFT layout)."""
    return torch.fft.fft2(x, norm="ortho")


def ifft2c(y: torch.Tensor) -> torch.Tensor:
    """Inverse of `fft2c` (also its adjoint)."""
    return torch.fft.ifft2(y, norm="ortho")


def check_mask(mask: torch.Tensor) -> torch.Tensor:
    """A centred bool (n, n) mask, validated, as a bool tensor."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a square (n, n) tensor, got {shape}")
    if mask.shape[0] < 4:
        raise ValueError(f"mask size must be at least 4, got {mask.shape[0]}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be boolean (or hold only 0 and 1)")
        mask = mask != 0
    if not bool(mask.any()):
        raise ValueError("mask samples nothing")
    return mask


def check_image(x: torch.Tensor, size: int, channels: int = 1, what: str = "image") -> None:
    if torch.jit.is_tracing():   # a trace records this shape once (its sizes are tensors: no Python bool of them)
        return
    if x.ndim < 3 or tuple(x.shape[-3:]) != (channels, size, size):
        raise ValueError(f"{what} must be shaped (B, {channels}, {size}, {size}), got {tuple(x.shape)}")


class FourierSampled(LinearPhysics):
    """Shared part of the Fourier operators: a centred k-space mask and the facts about it.

    `mask` is the centred bool mask (DC at n // 2); `sampling` is the same in FFT layout (a buffer,
    so `.to(device)` moves it; `.to(dtype)` leaves it bool).
    """

    complex_measurements = True
    #: Sweeps move along the sampled fraction of k-space (nested masks; the achieved ratio snaps to
    #: whole lines or points).
    sweep_axes: ClassVar[tuple[Axis, ...]] = (Axis("ratio", snaps=True),)

    def __init__(self, mask: torch.Tensor, *, mask_kind: str = "custom", seed: int | None = None,
                 center_fraction: float | None = None, acceleration: float | None = None,
                 offset: int | None = None):
        mask = check_mask(mask)
        super().__init__(mask.shape[0])
        self.mask_kind = mask_kind
        self.seed = seed
        self.center_fraction = center_fraction
        self.acceleration = acceleration  # fastMRI mask kinds only (with their lattice offset)
        self.offset = offset
        self.register_buffer("sampling", torch.fft.ifftshift(mask, dim=(-2, -1)))

    @property
    def mask(self) -> torch.Tensor:
        """The centred bool mask (n, n)."""
        return torch.fft.fftshift(self.sampling, dim=(-2, -1))

    @property
    def line_axis(self) -> int:
        """The k-space axis that indexes the phase-encode lines: -1 when the mask samples whole columns and
        not whole rows (fastMRI's column masks; read out along the rows), else -2 (rows, read out along the
        columns: our line masks; point masks are read as rows too)."""
        m = self.sampling
        whole_columns = bool((m == m[:1, :]).all())
        whole_rows = bool((m == m[:, :1]).all())
        return -1 if whole_columns and not whole_rows else -2

    @property
    def ratio(self) -> float:
        """Achieved sampling ratio: sampled k-space points / n^2."""
        return float(self.sampling.sum()) / self.sampling.numel()

    def describe(self) -> dict:
        centre = self.center_fraction
        if centre is None and self.mask_kind in DEFAULT_CENTER_FRACTION:
            centre = DEFAULT_CENTER_FRACTION[self.mask_kind]
        if centre is None and self.acceleration is not None:
            centre = default_center_fraction(self.acceleration)
        facts = {"kind": self.kind, "size": self.size, "ratio": round(self.ratio, 4), "mask": self.mask_kind,
                 "seed": self.seed, "center_fraction": centre}
        if self.acceleration is not None:
            facts.update(acceleration=self.acceleration, offset=self.offset)
        return facts

    def at_level(self, axis: str, value: float) -> "FourierSampled":
        self.sweep_axis(axis)
        return self.at_ratio(value)  # each subclass builds its own kind

    def same_level(self, axis: str, other: LinearPhysics) -> bool:
        """The same sampled entries (nested masks: the same ratio is the same mask)."""
        self.sweep_axis(axis)
        return bool(torch.equal(self.sampling.cpu(), other.sampling.cpu()))

    def _nested_mask(self, ratio: float) -> torch.Tensor:
        if self.mask_kind == "custom":
            raise ValueError("at_ratio needs a mask built by kind and seed, not a custom mask")
        if is_fastmri_kind(self.mask_kind):  # not nested: fastMRI's masks move with the acceleration
            mask = make_fastmri_mask(self.mask_kind, self.size, 1.0 / ratio, seed=self.seed,
                                     center_fraction=self.center_fraction)
            return mask.to(self.sampling.device)
        mask = make_mask(self.mask_kind, self.size, ratio, seed=self.seed, center_fraction=self.center_fraction)
        return mask.to(self.sampling.device)


class MRI(FourierSampled):
    """Single-coil Cartesian MRI on an n x n grid. Images (B, 1, n, n) -> k-space (B, 1, n, n) complex.

    Real or complex inputs of any float dtype; A returns complex of the input's precision (half
    precision is computed in complex64), A_adjoint complex (take `.real` for a real image).
    """

    kind = "mri"
    #: Tuned by survey.solvers.tuning on 64 x 64 brain validation slices, 25% gaussian lines:
    #: 29.9 dB vs zero-filled 24.1 dB.
    reference_defaults: ClassVar[dict] = dict(lam_w=1e-4, lam_tv=1e-3, iterations=200, wavelet="db2", levels=3,
                                              eps=3e-3)

    @property
    def measurement_shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.size)
        k = fft2c(fft_ready(x))
        return k * self.sampling.to(k.device)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_image(y, self.size, what="k-space")
        y = fft_ready(y, "k-space")
        return ifft2c(y * self.sampling.to(y.device))

    def with_mask(self, mask: torch.Tensor, mask_kind: str = "custom") -> MRI:
        """The same operator with another centred mask, on this operator's device."""
        return MRI(mask.to(self.sampling.device), mask_kind=mask_kind)

    def at_ratio(self, ratio: float) -> MRI:
        """This mask kind and seed at another ratio (nested masks, for sampling sweeps; a fastMRI kind
        at acceleration 1 / ratio)."""
        return MRI(self._nested_mask(ratio), mask_kind=self.mask_kind, seed=self.seed,
                   center_fraction=self.center_fraction,
                   acceleration=1.0 / ratio if is_fastmri_kind(self.mask_kind) else None)


def build(size: int = 64, ratio: float | None = None, mask: str = "gaussian-lines", seed: int = 0,
          center_fraction: float | None = None, acceleration: float | None = None,
          offset: int | None = None) -> MRI:
    """Single-coil MRI with a nested `mask` kind (see survey.physics.masks) at sampling `ratio`
    (default 0.25), or a fastMRI column mask ("fastmri-equispaced", "fastmri-random", see
    survey.physics.fastmri_masks) at `acceleration` (default 4) with its `center_fraction` and, for
    the equispaced one, the lattice `offset` (default: drawn from `seed`, as fastMRI does)."""
    if is_fastmri_kind(mask):
        if ratio is not None:
            raise ValueError(f"mask {mask!r} is set by `acceleration` (and center_fraction), not `ratio`")
        acceleration = DEFAULT_ACCELERATION if acceleration is None else acceleration
        sampling = make_fastmri_mask(mask, size, acceleration, center_fraction, seed=seed, offset=offset)
        return MRI(sampling, mask_kind=mask, seed=seed, center_fraction=center_fraction,
                   acceleration=float(acceleration), offset=offset)
    if acceleration is not None or offset is not None:
        raise ValueError(f"`acceleration` and `offset` apply to the fastMRI mask kinds, not {mask!r}; "
                         "give `ratio`")
    ratio = DEFAULT_RATIO if ratio is None else ratio
    sampling = make_mask(mask, size, ratio, seed=seed, center_fraction=center_fraction)
    return MRI(sampling, mask_kind=mask, seed=seed, center_fraction=center_fraction)


__all__ = ["MRI", "FourierSampled", "build", "fft2c", "ifft2c"]
