"""A zoo network cut into a frozen trunk and a tail of linear layers, the part the companions rework.

All three uncertainty companions act on the last L linear layers of a network (convolutions and
transposed convolutions, BatchNorm folded in, each optionally followed by a ReLU): the INN replaces
their weights by intervals, MC dropout puts dropout between them, ProbOut reads the features entering
the last one. `Split(net, layers=L)` does the cutting for the zoo's architectures:

- DnCNN (`survey.nets.dncnn`): the 17 convolutions of the body; f(y) = h - body(h), h = Re H(y).
- U-Net (`survey.nets.unet`): the decoder (per level: transposed convolution, concatenation with the
  encoder's skip, two convolutions) and the 1 x 1 head; f(y) = base + head(...). The encoder is trunk.

`trunk(y, physics)` runs everything before the tail once (with the network's own modules for the
encoder, and the folded layers for the decoder steps before the tail); `run(...)` runs the tail in
point mode with given weights, so the same program serves the three companions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from survey.nets.layers import real_image


@dataclass(frozen=True)
class LinearStep:
    """One linear layer of the program: conv (stride 1) or transposed conv, BatchNorm folded in."""

    kind: str        # "conv" or "convT"
    stride: int
    padding: int
    relu: bool


@dataclass(frozen=True)
class CatStep:
    """Concatenate the encoder's skip `skip` (an index into the trunk's skips) after the state."""

    skip: int


class TrunkOutput(NamedTuple):
    """What the tail needs: its input `state` (B, C, h, w), the encoder skips, the image the
    tail's output is added to (`base`, (B, 1, n, n)) and the sign of that addition (+1 U-Net,
    -1 DnCNN's residual f = h - body(h))."""

    state: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    base: torch.Tensor
    sign: float


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d | None):
    """(W, b) of a convolution followed by an eval-mode BatchNorm as one convolution (W', b')."""
    out_channels = weight.shape[0]
    bias = torch.zeros(out_channels, dtype=weight.dtype, device=weight.device) if bias is None else bias
    if bn is None:
        return weight.detach().clone(), bias.detach().clone()
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return ((weight * scale.view(-1, 1, 1, 1)).detach().clone(),
            ((bias - bn.running_mean) * scale + bn.bias).detach().clone())


def linear_op(step: LinearStep) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """x, W -> the layer's linear map without bias (conv2d or conv_transpose2d)."""
    if step.kind == "conv":
        return lambda x, w: F.conv2d(x, w, stride=step.stride, padding=step.padding)
    return lambda x, w: F.conv_transpose2d(x, w, stride=step.stride, padding=step.padding)


def _dncnn_program(net) -> tuple[list, list[tuple[torch.Tensor, torch.Tensor]]]:
    steps, params, pending = [], [], None

    def close():
        if pending is not None:
            conv, bn, relu = pending
            params.append(fold_batchnorm(conv.weight, conv.bias, bn))
            steps.append(LinearStep("conv", conv.stride[0], conv.padding[0], relu))

    for module in net.body:
        if isinstance(module, nn.Conv2d):
            close()
            pending = [module, None, False]
        elif isinstance(module, nn.BatchNorm2d):
            pending[1] = module
        elif isinstance(module, nn.ReLU):
            pending[2] = True
        else:
            raise TypeError(f"Split: unexpected DnCNN module {type(module).__name__}")
    close()
    return steps, params


def _block_steps(block: nn.Sequential) -> tuple[list, list]:
    conv0, bn0, _, conv1, bn1, _ = block
    return ([LinearStep("conv", 1, conv0.padding[0], True), LinearStep("conv", 1, conv1.padding[0], True)],
            [fold_batchnorm(conv0.weight, conv0.bias, bn0), fold_batchnorm(conv1.weight, conv1.bias, bn1)])


def _unet_program(net) -> tuple[list, list[tuple[torch.Tensor, torch.Tensor]]]:
    steps, params = [], []
    depth = len(net.up)
    for level, (up, merge) in enumerate(zip(net.up, net.merge)):
        steps.append(LinearStep("convT", up.stride[0], up.padding[0], False))
        params.append((up.weight.detach().clone(), up.bias.detach().clone()))
        steps.append(CatStep(depth - 1 - level))
        block_steps, block_params = _block_steps(merge)
        steps += block_steps
        params += block_params
    steps.append(LinearStep("conv", 1, net.head.padding[0], False))
    params.append((net.head.weight.detach().clone(), net.head.bias.detach().clone()))
    return steps, params


def architecture_of(net: nn.Module) -> str:
    from survey.nets.dncnn import DnCNN
    from survey.nets.unet import UNet

    if isinstance(net, DnCNN):
        return "dncnn"
    if isinstance(net, UNet):
        return "unet"
    raise TypeError(f"uncertainty companions support DnCNN and U-Net zoo networks, not {type(net).__name__}")


class Split(nn.Module):
    """`net` as trunk + tail of its last `layers` linear layers (module docstring).

    Buffers weight_k, bias_k (k over the program's linear layers, BatchNorm folded) are frozen
    copies of the network's; `tail_linear` lists the indices of the tail's linear layers.
    """

    def __init__(self, net: nn.Module, layers: int):
        super().__init__()
        self.architecture = architecture_of(net)
        self.net = net
        for p in net.parameters():
            p.requires_grad_(False)
        steps, params = (_dncnn_program if self.architecture == "dncnn" else _unet_program)(net)
        n_linear = len(params)
        if not 1 <= int(layers) <= n_linear:
            raise ValueError(f"Split: layers must be in [1, {n_linear}] for this {self.architecture}, got {layers}")
        self.layers = int(layers)
        self.steps = steps
        linear_positions = [i for i, s in enumerate(steps) if isinstance(s, LinearStep)]
        self.start = linear_positions[n_linear - self.layers]  # first program step of the tail
        self.linear_index = {pos: k for k, pos in enumerate(linear_positions)}
        self.tail_linear = list(range(n_linear - self.layers, n_linear))
        for k, (w, b) in enumerate(params):
            self.register_buffer(f"weight_{k}", w)
            self.register_buffer(f"bias_{k}", b)

    def weight(self, k: int) -> torch.Tensor:
        return getattr(self, f"weight_{k}")

    def bias(self, k: int) -> torch.Tensor:
        return getattr(self, f"bias_{k}")

    def tail_steps(self) -> list[tuple[int, object, int | None]]:
        """(program position, step, linear index or None) for the tail, in order."""
        return [(i, s, self.linear_index.get(i)) for i, s in enumerate(self.steps) if i >= self.start]

    def trunk(self, y: torch.Tensor, physics) -> TrunkOutput:
        """Everything before the tail, with the base network's weights; (B, ...) measurements."""
        net = self.net
        h = real_image(physics.H(y))
        if self.architecture == "dncnn":
            state, base, sign, skips = h, h, -1.0, ()
        else:
            z, base = net.features(physics.H(y))
            skips_list = []
            for i, block in enumerate(net.down):
                z = block(z if i == 0 else net.pool(z))
                skips_list.append(z)
            state, skips, sign = z, tuple(skips_list[:-1]), 1.0
        for i in range(self.start):
            state = self.point_step(i, state, skips)
        return TrunkOutput(state, skips, base, sign)

    def point_step(self, i: int, state: torch.Tensor, skips, weight=None, bias=None) -> torch.Tensor:
        """Program step i in point mode (the base's folded weights unless given)."""
        step = self.steps[i]
        if isinstance(step, CatStep):
            return torch.cat([state, skips[step.skip]], dim=1)
        k = self.linear_index[i]
        w = self.weight(k) if weight is None else weight
        b = self.bias(k) if bias is None else bias
        out = linear_op(step)(state, w) + b.view(1, -1, 1, 1)
        return torch.relu(out) if step.relu else out

    def run(self, trunk: TrunkOutput, weights: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
            after: Callable[[int, torch.Tensor], torch.Tensor] | None = None, stop_before_last: bool = False):
        """The tail in point mode: weights maps linear index -> (W, b) (default the base's); `after(k, z)`
        may transform the activation after linear layer k (dropout); returns the network's output
        image, or with `stop_before_last` the features entering the last linear layer."""
        state = trunk.state
        steps = self.tail_steps()
        for position, step, k in steps:
            if stop_before_last and k == self.tail_linear[-1]:
                return state
            w, b = (weights or {}).get(k, (None, None)) if k is not None else (None, None)
            state = self.point_step(position, state, trunk.skips, w, b)
            if after is not None and k is not None:
                state = after(k, state)
        return trunk.base + trunk.sign * state

    def tail_parameter_count(self) -> int:
        return sum(self.weight(k).numel() + self.bias(k).numel() for k in self.tail_linear)


__all__ = ["CatStep", "LinearStep", "Split", "TrunkOutput", "architecture_of", "fold_batchnorm", "linear_op"]
