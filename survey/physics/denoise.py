"""Denoising: A = I with an additive Gaussian noise model y = x + sigma * e, e ~ N(0, I)."""

from __future__ import annotations

import math
import numbers
from typing import ClassVar

import torch

from survey.physics.base import Axis, LinearPhysics


class Denoise(LinearPhysics):
    """Identity operator on (B, 1, n, n) images (real or complex) with noise level `sigma`.

    sigma: standard deviation of the additive noise in image units (images in [0, 1], so 25/255
    is the usual "sigma = 25" of the denoising literature). A, A* and H return copies of their input.
    """

    kind = "denoise"
    complex_measurements = False
    #: Tuned by survey.solvers.tuning at sigma = 25/255: 27.7 dB vs the noisy image 20.2 dB.
    reference_defaults: ClassVar[dict] = dict(lam_w=2e-2, lam_tv=8e-2, iterations=200, wavelet="db2", levels=3,
                                              eps=3e-3)
    #: Sweeps move along the noise level (lower is more information): y = x + sigma * e.
    sweep_axes: ClassVar[tuple[Axis, ...]] = (Axis("sigma", increasing=False, noise=True),)

    def __init__(self, size: int, sigma: float = 25 / 255):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"denoise: size must be a positive integer, got {size!r}")
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"denoise: sigma must be a finite number >= 0, got {sigma!r}")
        super().__init__(size)
        self.sigma = float(sigma)

    @property
    def measurement_shape(self) -> tuple[int, int, int]:
        return self.image_shape

    def _check(self, x: torch.Tensor, what: str) -> torch.Tensor:
        if x.ndim < 3 or tuple(x.shape[-3:]) != self.image_shape:
            raise ValueError(f"denoise: {what} must be shaped (B, 1, {self.size}, {self.size}), "
                             f"got {tuple(x.shape)}")
        if not (x.is_floating_point() or torch.is_complex(x)):
            raise ValueError(f"denoise: {what} must be a floating-point or complex tensor, got {x.dtype}")
        return x.clone()

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self._check(x, "image")

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._check(y, "measurement")

    def noisy(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A x + sigma * e with e standard Gaussian (complex Gaussian, E|e|^2 = 1, for complex x).

        The noise is drawn on the generator's device and moved to x's, so a CPU generator gives the
        same noise for a CUDA image as for a CPU one.
        """
        y = self.A(x)
        device = generator.device if generator is not None else x.device
        noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=device)
        return y + self.sigma * noise.to(y.device)

    def describe(self) -> dict:
        return {"kind": self.kind, "size": self.size, "sigma": round(self.sigma, 6)}

    def at_level(self, axis: str, value: float) -> "Denoise":
        self.sweep_axis(axis)
        return Denoise(self.size, value).to(self._device())


def build(size: int = 64, sigma: float = 25 / 255) -> Denoise:
    """Identity with Gaussian noise of standard deviation `sigma` (image units)."""
    return Denoise(size, sigma)


__all__ = ["Denoise", "build"]
