"""Thermal noise: e ~ N(0, sigma^2 I) on the measured entries, y' = y + sigma * e (severity sigma).

Complex entries have E|e|^2 = sigma^2 (real and imaginary parts each sigma^2 / 2), the usual
convention for k-space noise. The signal-to-noise ratio is SNR_dB = 10 log10(||A x||^2 / (m sigma^2))
with m the number of measured entries (`sigma_from_snr`, `snr_from_sigma`); for parallel MRI it is
defined per coil (the noise level of coil c from ||y_c||^2 and the m_c entries of coil c).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from survey.perturb.base import Family, Support, broadcast_batch, per_sample


@dataclass(kw_only=True)
class Gaussian(Family):
    """Additive Gaussian measurement noise of standard deviation `sigma` per measured entry."""

    example_severity = 0.05  # a severity with a visible effect (survey.testing.check_family)

    name = "gaussian"
    severity_name = "sigma"
    identity_severity = 0.0
    differentiable = True

    def apply(self, y: torch.Tensor, z: torch.Tensor, severity, physics) -> torch.Tensor:
        """y: (B or 1, *measurement_shape); z: (B, dim); severity sigma: float, (B,) or (B, coils)."""
        y = broadcast_batch(y, z)
        e = Support.of(physics).scatter(z, y)
        return y + per_sample(severity, y) * e


def _per_coil_default(physics, y: torch.Tensor) -> bool:
    return getattr(physics, "kind", "") == "pmri" and y.ndim >= 4


def sigma_from_snr(y: torch.Tensor, snr_db, physics, per_coil: bool | None = None) -> torch.Tensor:
    """The sigma giving `snr_db` for clean measurements y = A x: (B,) or, per coil, (B, coils).

    sigma^2 = ||y||^2 / (m 10^(snr_db / 10)), m the measured entries (per coil: ||y_c||^2 and m_c).
    per_coil defaults to True for parallel MRI (measurements (B, coils, n, n)).
    """
    support = Support.of(physics)
    per_coil = _per_coil_default(physics, y) if per_coil is None else per_coil
    power, count = _power_and_count(y, support, per_coil)
    snr = torch.as_tensor(snr_db, dtype=power.dtype, device=power.device)
    return torch.sqrt(power / (count * 10.0 ** (snr / 10.0)))


def snr_from_sigma(y: torch.Tensor, sigma, physics, per_coil: bool | None = None) -> torch.Tensor:
    """The inverse of `sigma_from_snr`: SNR in dB, (B,) or (B, coils)."""
    support = Support.of(physics)
    per_coil = _per_coil_default(physics, y) if per_coil is None else per_coil
    power, count = _power_and_count(y, support, per_coil)
    sigma = torch.as_tensor(sigma, dtype=power.dtype, device=power.device)
    return 10.0 * torch.log10(power / (count * sigma**2))


def _power_and_count(y: torch.Tensor, support: Support, per_coil: bool) -> tuple[torch.Tensor, torch.Tensor]:
    mask = support.mask.to(y.device)
    energy = (y.abs() ** 2) * mask
    if per_coil:
        power = energy.reshape(*y.shape[:2], -1).sum(-1)
        count = mask.reshape(mask.shape[0], -1).sum(-1).to(power.dtype)
    else:
        power = energy.reshape(y.shape[0], -1).sum(-1)
        count = torch.tensor(float(mask.sum()), dtype=power.dtype, device=power.device)
    return power, count


def build() -> Gaussian:
    return Gaussian()


__all__ = ["Gaussian", "sigma_from_snr", "snr_from_sigma"]
