"""MRI-VN (Hammernik et al.): a variational network, i.e. unrolled gradient steps with learned regulariser.

x_{t+1} = x_t - sum_k K_k^T phi_{t,k}(K_k x_t) - lam_t A*(A x_t - y), x_0 = A* y, where K_k are learned
convolutions on (real, imaginary) channels and phi_{t,k} learned radial-basis-function activations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from survey.nets.layers import channels_to_complex, complex_to_channels, real_image


class RBFActivation(nn.Module):
    """phi_k(z) = sum_j w_kj exp(-(z - mu_j)^2 / (2 sigma^2)), one learned curve per channel k.

    Evaluated through a fine lookup table (the curves sampled at `table` points, then linear
    interpolation): the exact RBF sum at the knots, O(1) per element instead of O(centres), and
    differentiable in both the weights and z. Beyond the table the curve is held constant.
    """

    def __init__(self, channels: int, centres: int = 31, span: float = 1.0, table: int = 512):
        super().__init__()
        self.register_buffer("mu", torch.linspace(-span, span, centres))
        self.sigma = 2 * span / (centres - 1)
        self.register_buffer("knots", torch.linspace(-1.5 * span, 1.5 * span, table))
        # Initialised close to a small odd (shrinkage-like) curve.
        self.weight = nn.Parameter(0.01 * torch.linspace(-1, 1, centres).repeat(channels, 1))

    def curves(self) -> torch.Tensor:
        """(K, table) values of every channel's curve at the knots."""
        basis = torch.exp(-((self.knots[:, None] - self.mu[None, :]) ** 2) / (2 * self.sigma ** 2))
        return self.weight @ basis.T

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k, t = self.weight.shape[0], self.knots.numel()
        step = (self.knots[-1] - self.knots[0]) / (t - 1)
        pos = ((z - self.knots[0]) / step).clamp(0, t - 1 - 1e-4)
        lo = pos.detach().floor().long()
        frac = pos - lo
        offset = (torch.arange(k, device=z.device) * t).view(1, k, 1, 1)
        table = self.curves().to(z.dtype).reshape(-1)
        left, right = table[lo + offset], table[lo + 1 + offset]
        return left + frac * (right - left)


class VNStep(nn.Module):
    def __init__(self, filters: int, kernel: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(filters, 2, kernel, kernel) / math.sqrt(2 * kernel * kernel))
        self.act = RBFActivation(filters)
        self.lam = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics) -> torch.Tensor:
        pad = self.kernel.shape[-1] // 2
        kernel = self.kernel - self.kernel.mean(dim=(1, 2, 3), keepdim=True)  # zero-mean filters, as in MRI-VN
        z = complex_to_channels(x)
        reg = F.conv_transpose2d(self.act(F.conv2d(z, kernel, padding=pad)), kernel, padding=pad)
        return x - channels_to_complex(reg) - self.lam * physics.A_adjoint(physics.A(x) - y)


class VarNet(nn.Module):
    """`steps` variational steps, each with `filters` learned kernel x kernel filters; output Re x_T."""

    def __init__(self, steps: int = 8, filters: int = 24, kernel: int = 5):
        super().__init__()
        self.steps = nn.ModuleList([VNStep(filters, kernel) for _ in range(steps)])

    def forward(self, y: torch.Tensor, physics) -> torch.Tensor:
        x = physics.A_adjoint(y)
        for step in self.steps:
            x = step(x, y, physics)
        return real_image(x)
