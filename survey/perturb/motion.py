"""Rigid in-plane patient motion during a Cartesian MRI scan (single- or multi-coil).

The phase-encode lines are the k-space rows (axis -2, read out along axis -1) or, for column masks such
as fastMRI's, the columns (the operator's `line_axis`; everything below then reads in the transposed
frame, where the lines are rows and a shift (d_row, d_col) is (along the readout, along the lines) of the
original image). The sampled lines are acquired one after another in k_y order (-n/2 .. n/2 - 1), in
shots of `lines_per_shot` lines; shot s sees the object rotated by theta_s about the image centre
(pixel n // 2) and translated by d_s = (d_row, d_col) pixels, so its lines are those of the moved object:
    y'_line = y_line + [P F S_c M_s x - P F S_c x]_line      (M_s: rotate by theta_s, then translate by d_s)
The translation is the k-space phase ramp exp(-2 pi i k . d / n) applied in the image domain (before the
coil maps, which do not move), the rotation three FFT shears (band-limited, exact at theta = 0), so the
moved object is the band-limited (periodic) interpolation of x; a constant integer shift is a circular
shift of x. The difference is added to y, so noise already in y stays; severity 0 returns y exactly.

Trajectory: a smooth random function of the scan time, sum_j w_j c_j cos(pi j t) over `modes` cosine
modes (w_j = 1 / (1 + j), Gaussian coefficients c from the latent, 3 x modes numbers: row shift, column
shift, rotation), rescaled so that every draw has exactly RMS displacement |d| over the acquired lines =
severity pixels (or mm with `fov_mm`, the field of view) and RMS rotation = rotation_per_pixel x the RMS
displacement in pixels (degrees). The latent picks the trajectory's shape; the severity its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from survey.perturb.base import Family, batch_severity, broadcast_batch
from survey.perturb.coil import FOURIER_KINDS, check_object, line_frame, lines_are_columns, where_identity


def _frequencies(n: int, dtype, device) -> torch.Tensor:
    return torch.fft.fftfreq(n, d=1.0 / n, dtype=dtype, device=device)  # integers, FFT layout


def shift_along(images: torch.Tensor, shift: torch.Tensor, dim: int) -> torch.Tensor:
    """Band-limited (periodic) shift of complex images along `dim` (-1 columns, -2 rows) by `shift` pixels,
    shift broadcastable against images with the shifted axis as a frequency axis of size 1."""
    n = images.shape[dim]
    k = _frequencies(n, images.real.dtype, images.device)
    k = k.reshape(n, 1) if dim == -2 else k
    ramp = torch.polar(torch.ones_like(shift * k), -2 * math.pi * shift * k / n)
    return torch.fft.ifft(torch.fft.fft(images, dim=dim) * ramp, dim=dim)


def rotate(images: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate (N, n, n) complex images about pixel (n // 2, n // 2) by angle (N,) radians with three FFT shears
    (x-shear -tan(a/2), y-shear sin(a), x-shear -tan(a/2)); exact identity arithmetic at angle 0 aside from
    FFT round-off."""
    n = images.shape[-1]
    centred = torch.arange(n, dtype=images.real.dtype, device=images.device) - n // 2
    a = (-torch.tan(angle / 2)).reshape(-1, 1, 1)
    b = torch.sin(angle).reshape(-1, 1, 1)
    rows = centred.reshape(1, n, 1)     # shift of row r along the columns: a * (r - c)
    cols = centred.reshape(1, 1, n)     # shift of column q along the rows: b * (q - c)
    out = shift_along(images, a * rows, -1)
    # the y-shear needs the shift per column with rows as the FFT axis: (N, 1(freq), n(cols))
    out = shift_along(out, (b * cols), -2)
    return shift_along(out, a * rows, -1)


def translate(images: torch.Tensor, d_row: torch.Tensor, d_col: torch.Tensor) -> torch.Tensor:
    """Band-limited translation of (N, n, n) complex images by (d_row, d_col) (N,) pixels (content moves to +)."""
    n = images.shape[-1]
    k = _frequencies(n, images.real.dtype, images.device)
    phase = -2 * math.pi * (d_row.reshape(-1, 1, 1) * k.reshape(1, n, 1)
                            + d_col.reshape(-1, 1, 1) * k.reshape(1, 1, n)) / n
    return torch.fft.ifft2(torch.fft.fft2(images) * torch.polar(torch.ones_like(phase), phase))


def acquired_lines(sampling: torch.Tensor) -> torch.Tensor:
    """FFT-layout row indices of the sampled phase-encode lines in acquisition order (k_y from -n/2 up)."""
    n = sampling.shape[-2]
    rows = sampling.reshape(n, -1).any(dim=1).nonzero().squeeze(1)
    ky = torch.where(rows >= n - n // 2, rows - n, rows)  # signed k_y of each row
    return rows[torch.argsort(ky)]


@dataclass(kw_only=True)
class Motion(Family):
    """Rigid in-plane motion, one pose per shot; severity = RMS displacement (px, or mm with fov_mm)."""

    example_severity = 1.0  # a severity with a visible effect (survey.testing.check_family)

    modes: int = 4
    rotation_per_pixel: float = 1.0
    lines_per_shot: int = 1
    fov_mm: float | None = None

    name = "motion"
    severity_name = "RMS displacement"
    severity_unit = "px"
    identity_severity = 0.0
    differentiable = True
    needs_image = True
    kinds = FOURIER_KINDS

    def __post_init__(self):
        for key in ("modes", "lines_per_shot"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"motion: {key} must be an integer >= 1, got {value!r}")
        if isinstance(self.rotation_per_pixel, bool) or not isinstance(self.rotation_per_pixel, (int, float)) \
                or not math.isfinite(self.rotation_per_pixel) or self.rotation_per_pixel < 0:
            raise ValueError(f"motion: rotation_per_pixel must be a finite number >= 0 (degrees), "
                             f"got {self.rotation_per_pixel!r}")
        if self.fov_mm is not None:
            if isinstance(self.fov_mm, bool) or not isinstance(self.fov_mm, (int, float)) or not self.fov_mm > 0:
                raise ValueError(f"motion: fov_mm must be a number > 0 (mm) or None, got {self.fov_mm!r}")
            self.severity_unit = "mm"

    def params(self) -> dict:
        return {"modes": self.modes, "rotation_per_pixel": self.rotation_per_pixel,
                "lines_per_shot": self.lines_per_shot, "fov_mm": self.fov_mm}

    def latent_shape(self, physics) -> tuple[int, ...]:
        return (3 * self.modes,)

    def pixels(self, severity: torch.Tensor, physics) -> torch.Tensor:
        """Severity in pixels (converted from mm through fov_mm when given)."""
        return severity if self.fov_mm is None else severity * (physics.size / self.fov_mm)

    def trajectory(self, z: torch.Tensor, severity, physics) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows (L,), shifts (B, L, 2) pixels (row, col), angles (B, L) degrees) for the L acquired lines, in
        the line frame (see the module docstring)."""
        batch = z.shape[0]
        _, sampling, _ = line_frame(physics, torch.float64, z.device)
        rows = acquired_lines(sampling)
        count = rows.numel()
        shots = math.ceil(count / self.lines_per_shot)
        shot_of_line = torch.arange(count, device=z.device) // self.lines_per_shot
        t = (torch.arange(shots, dtype=torch.float64, device=z.device) + 0.5) / shots
        j = torch.arange(self.modes, dtype=torch.float64, device=z.device)
        basis = torch.cos(math.pi * j[:, None] * t[None, :]) / (1.0 + j[:, None])   # (K, S)
        c = z.to(torch.float64).reshape(batch, 3, self.modes)
        path = torch.einsum("bpk,ks->bps", c, basis)[:, :, shot_of_line]              # (B, 3, L)
        pixels = self.pixels(batch_severity(severity, batch, z), physics)
        rms_d = path[:, :2].square().sum(1).mean(1).sqrt().clamp(min=1e-300)
        rms_a = path[:, 2].square().mean(1).sqrt().clamp(min=1e-300)
        shifts = (path[:, :2] * (pixels / rms_d).reshape(batch, 1, 1)).transpose(1, 2)
        angles = path[:, 2] * (self.rotation_per_pixel * pixels / rms_a).reshape(batch, 1)
        return rows, shifts, angles

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics, x: torch.Tensor | None = None
              ) -> torch.Tensor:
        """y (B or 1, C, n, n) k-space; z (B, 3 * modes); x the object (B or 1, 1, n, n)."""
        y = broadcast_batch(y, z)
        x = check_object(x, physics, y.shape[0], self.name)
        sev = batch_severity(severity, y.shape[0], y)
        flipped = lines_are_columns(physics)
        if flipped:  # lines are columns: work in the transposed frame
            x, y = x.mT, y.mT
        rows, shifts, angles = self.trajectory(z.to(y.device), sev, physics)
        moved = where_identity(sev, y, y + self.change(x, rows, shifts, angles, physics))
        return moved.mT if flipped else moved

    def change(self, x: torch.Tensor, rows: torch.Tensor, shifts: torch.Tensor, angles: torch.Tensor,
               physics) -> torch.Tensor:
        """P F S_c (M x - x) on the given lines: (B, C, n, n) complex128, zeros off them, in the line frame.

        x (B, 1, n, n) in the line frame; rows (L,) FFT-layout line indices; shifts (B, L, 2) pixels; angles
        (B, L) degrees.
        """
        batch, n, count = x.shape[0], physics.size, rows.numel()
        maps, sampling, _ = line_frame(physics, torch.float64, x.device)
        obj = x.to(torch.complex128).reshape(batch, 1, n, n).expand(batch, count, n, n).reshape(-1, n, n)
        moved = obj
        radians = torch.deg2rad(angles).reshape(-1)
        if bool((radians != 0).any()):
            moved = rotate(moved, radians)
        moved = translate(moved, shifts[..., 0].reshape(-1), shifts[..., 1].reshape(-1))
        diff = (moved - obj).reshape(batch, count, 1, n, n) * maps           # (B, L, C, n, n)
        # row k_y of the orthonormal 2-D DFT: weighted sum over image rows, then a DFT along the readout
        ry = torch.arange(n, dtype=torch.float64, device=x.device)
        weights = torch.polar(torch.ones(count, n, dtype=torch.float64, device=x.device),
                              -2 * math.pi * rows.to(torch.float64)[:, None] * ry[None, :] / n)  # (L, n)
        lines = torch.fft.fft(torch.einsum("blcyx,ly->blcx", diff, weights), dim=-1) / n        # (B, L, C, n)
        out = torch.zeros((batch, maps.shape[0], n, n), dtype=torch.complex128, device=x.device)
        out[:, :, rows, :] = lines.transpose(1, 2)
        return out * sampling


def build(modes: int = 4, rotation_per_pixel: float = 1.0, lines_per_shot: int = 1,
          fov_mm: float | None = None) -> Motion:
    return Motion(modes=modes, rotation_per_pixel=rotation_per_pixel, lines_per_shot=lines_per_shot,
                  fov_mm=fov_mm)


__all__ = ["Motion", "acquired_lines", "build", "rotate", "shift_along", "translate"]
