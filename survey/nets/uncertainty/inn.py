"""Interval Neural Network (Oala et al., after Sadeghi et al.): interval weights in the last L layers.

Interval arithmetic. An input interval [lo, hi] (component-wise) through a linear layer with weight
interval [W_lo, W_hi] and bias interval [b_lo, b_hi]: write x = x+ - x- with x+ = max(x, 0) in
[p_lo, p_hi] = [max(lo, 0), max(hi, 0)] and x- = max(-x, 0) in [n_lo, n_hi] = [max(-hi, 0), max(-lo, 0)],
both non-negative; then, with W+ = max(W, 0) and W- = min(W, 0) (the split positive / negative weights),

    z_lo = W_lo+ p_lo + W_lo- p_hi - (W_hi+ n_hi + W_hi- n_lo) + b_lo
    z_hi = W_hi+ p_hi + W_hi- p_lo - (W_lo+ n_lo + W_lo- n_hi) + b_hi,

the bounds of Oala et al.'s supplementary derivation for non-negative inputs (n = 0, e.g. after a ReLU),
extended soundly to signed ones (exact when no input interval straddles 0). Convolutions and
transposed convolutions are linear maps of this kind; ReLU and max-pooling are monotone, so they map
[lo, hi] to [relu(lo), relu(hi)]; concatenating a point skip adds [s, s]. If every weight lies in its
interval and the input in its, the layer's output lies in [z_lo, z_hi] (tests/test_uncertainty.py).

The INN: a frozen network (survey.nets.uncertainty.tail.Split) whose last L linear layers carry
[W_lo, W_hi], [b_lo, b_hi] initialised at the trained (BatchNorm-folded) W, b and kept so that
W_lo <= W <= W_hi (projection after every step), so lo(y) <= f(y) <= hi(y) for every input y.
Trained post hoc, base weights frozen, on

    mean(relu(lo - x)^2) - beta mean(lo) + mean(relu(x - hi)^2) + beta mean(hi),

Oala et al.'s loss with its L1 width term split between the bounds; u = hi - lo per pixel.
Interval widths propagate through |W| rather than W, so they grow fast with depth: trained widths of
the weights are tiny (1e-8 to 1e-6 here, Oala et al. train with a learning rate of 1e-6). Stored as
non-negative offsets W - W_lo, W_hi - W in bfloat16 (float32's range, 3 significant digits; rounding
keeps them >= 0, so containment survives storage) next to the base network's weights, whose hash the companion's card records.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from survey.nets.uncertainty.base import Companion
from survey.nets.uncertainty.tail import CatStep, LinearStep, Split, linear_op


def interval_linear(lo: torch.Tensor, hi: torch.Tensor, w_lo: torch.Tensor, w_hi: torch.Tensor,
                    b_lo: torch.Tensor, b_hi: torch.Tensor, op) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi] through x -> op(x, W) + b for W in [w_lo, w_hi], b in [b_lo, b_hi] (channel biases).

    op: a bilinear map (x, W) -> tensor, e.g. conv2d or conv_transpose2d with fixed stride/padding.
    """
    wl_pos, wl_neg = w_lo.clamp_min(0), w_lo.clamp_max(0)
    wh_pos, wh_neg = w_hi.clamp_min(0), w_hi.clamp_max(0)
    p_lo, p_hi = lo.clamp_min(0), hi.clamp_min(0)
    z_lo = op(p_lo, wl_pos) + op(p_hi, wl_neg)
    z_hi = op(p_hi, wh_pos) + op(p_lo, wh_neg)
    if bool((lo < 0).any()):  # signed inputs: the negative parts' contribution
        n_lo, n_hi = (-hi).clamp_min(0), (-lo).clamp_min(0)
        z_lo = z_lo - op(n_hi, wh_pos) - op(n_lo, wh_neg)
        z_hi = z_hi - op(n_lo, wl_pos) - op(n_hi, wl_neg)
    shape = (1, -1) + (1,) * (lo.ndim - 2)
    return z_lo + b_lo.view(shape), z_hi + b_hi.view(shape)


def interval_relu(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU is monotone: [relu(lo), relu(hi)]."""
    return torch.relu(lo), torch.relu(hi)


class IntervalConv2d(nn.Module):
    """A Conv2d / ConvTranspose2d with interval weights and biases, for intervals of inputs.

    Built from a trained layer: lower = upper = its weights; `forward(lo, hi) -> (lo, hi)`.
    """

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d):
        super().__init__()
        kind = "convT" if isinstance(layer, nn.ConvTranspose2d) else "conv"
        if kind == "conv" and (layer.groups != 1 or layer.dilation != (1, 1)):
            raise ValueError("IntervalConv2d: groups and dilation are not supported")
        self.step = LinearStep(kind, layer.stride[0], layer.padding[0], False)
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[1 if kind == "convT" else 0])
        self.w_lo = nn.Parameter(layer.weight.detach().clone())
        self.w_hi = nn.Parameter(layer.weight.detach().clone())
        self.b_lo = nn.Parameter(bias.detach().clone())
        self.b_hi = nn.Parameter(bias.detach().clone())

    def forward(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return interval_linear(lo, hi, self.w_lo, self.w_hi, self.b_lo, self.b_hi, linear_op(self.step))


class IntervalNet(Companion):
    """INN companion of a DnCNN or U-Net zoo network: interval weights in its last `layers` layers.

    `bounds(y, physics) -> (lo, hi)` (B, 1, n, n) with lo <= f(y) <= hi; u = hi - lo.
    """

    method: ClassVar[str] = "inn"

    def __init__(self, net: nn.Module, *, layers: int = 8, beta: float = 1e-3):
        super().__init__()
        self.split = Split(net, layers)
        self.beta = float(beta)
        self.w_lo, self.w_hi, self.b_lo, self.b_hi = (nn.ParameterList() for _ in range(4))
        for k in self.split.tail_linear:
            w, b = self.split.weight(k), self.split.bias(k)
            self.w_lo.append(nn.Parameter(w.clone()))
            self.w_hi.append(nn.Parameter(w.clone()))
            self.b_lo.append(nn.Parameter(b.clone()))
            self.b_hi.append(nn.Parameter(b.clone()))

    def bounds(self, y: torch.Tensor, physics) -> tuple[torch.Tensor, torch.Tensor]:
        trunk = self.split.trunk(y, physics)
        lo = hi = trunk.state
        first = self.split.tail_linear[0]
        for position, step, k in self.split.tail_steps():
            if isinstance(step, CatStep):
                skip = trunk.skips[step.skip]
                lo, hi = torch.cat([lo, skip], dim=1), torch.cat([hi, skip], dim=1)
                continue
            j = k - first
            lo, hi = interval_linear(lo, hi, self.w_lo[j], self.w_hi[j], self.b_lo[j], self.b_hi[j], linear_op(step))
            if step.relu:
                lo, hi = interval_relu(lo, hi)
        if trunk.sign > 0:
            return trunk.base + lo, trunk.base + hi
        return trunk.base - hi, trunk.base - lo

    def uncertainty(self, y: torch.Tensor, physics, generator: torch.Generator | None = None) -> torch.Tensor:
        lo, hi = self.bounds(y, physics)
        return hi - lo

    def loss(self, y: torch.Tensor, physics, x: torch.Tensor, generator: torch.Generator | None = None):
        lo, hi = self.bounds(y, physics)
        return (torch.relu(lo - x).square().mean() - self.beta * lo.mean()
                + torch.relu(x - hi).square().mean() + self.beta * hi.mean())

    @torch.no_grad()
    def project_(self) -> None:
        """Keep W_lo <= W <= W_hi and b_lo <= b <= b_hi (the constraint that makes lo <= f <= hi)."""
        for j, k in enumerate(self.split.tail_linear):
            w, b = self.split.weight(k), self.split.bias(k)
            self.w_lo[j].copy_(torch.minimum(self.w_lo[j], w))
            self.w_hi[j].copy_(torch.maximum(self.w_hi[j], w))
            self.b_lo[j].copy_(torch.minimum(self.b_lo[j], b))
            self.b_hi[j].copy_(torch.maximum(self.b_hi[j], b))

    def companion_state(self) -> dict[str, torch.Tensor]:
        out = {}
        for j, k in enumerate(self.split.tail_linear):
            w, b = self.split.weight(k), self.split.bias(k)
            out[f"w_below.{k}"] = (w - self.w_lo[j]).clamp_min(0).detach().to(torch.bfloat16)
            out[f"w_above.{k}"] = (self.w_hi[j] - w).clamp_min(0).detach().to(torch.bfloat16)
            out[f"b_below.{k}"] = (b - self.b_lo[j]).clamp_min(0).detach().to(torch.bfloat16)
            out[f"b_above.{k}"] = (self.b_hi[j] - b).clamp_min(0).detach().to(torch.bfloat16)
        return out

    @torch.no_grad()
    def load_companion_state(self, state: dict[str, torch.Tensor]) -> None:
        for j, k in enumerate(self.split.tail_linear):
            w, b = self.split.weight(k), self.split.bias(k)
            self.w_lo[j].copy_(w - state[f"w_below.{k}"].to(w))
            self.w_hi[j].copy_(w + state[f"w_above.{k}"].to(w))
            self.b_lo[j].copy_(b - state[f"b_below.{k}"].to(b))
            self.b_hi[j].copy_(b + state[f"b_above.{k}"].to(b))
        self.project_()  # float rounding of w -/+ offset cannot cross w, but say so explicitly

    @torch.no_grad()
    def test_metrics(self, y: torch.Tensor, physics, x: torch.Tensor) -> dict[str, float]:
        lo, hi = self.bounds(y, physics)
        return {"coverage": float(((lo <= x) & (x <= hi)).float().mean()), "mean_width": float((hi - lo).mean())}


__all__ = ["IntervalConv2d", "IntervalNet", "interval_linear", "interval_relu"]
