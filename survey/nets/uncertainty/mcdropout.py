"""MC dropout (Gal and Ghahramani; Leibig et al.): a dropout variant of the network, u = std over T passes.

The variant: the frozen network's last L layers (survey.nets.uncertainty.tail.Split) get their own
weights, initialised at the trained ones, with inverted dropout after some of them, and are trained
by the zoo's recipe (pixel MSE, Adam, the same augmentation and patches) with dropout on. Oala et al.
puts dropout after every other convolution of its DnCNN (p = 0.05) and after the down- and
up-sampling of its U-Net (p = 0.7): here after every other tail layer of DnCNN and after each
transposed convolution (up-sampling) in the U-Net's tail, the encoder being frozen.

u(y) = per-pixel standard deviation (T - 1 denominator) over T passes with independent masks drawn
from the task's generator, batched: the trunk runs once, the tail T times in chunks of `chunk`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from survey.nets.uncertainty.base import Companion, draw_mask
from survey.nets.uncertainty.tail import LinearStep, Split, TrunkOutput


class MCDropoutNet(Companion):
    """MC-dropout companion: tail weights of its own, dropout (probability p) after the layers in
    `dropout_after` (tail-relative linear indices; default by architecture, module docstring)."""

    method: ClassVar[str] = "mcdropout"

    def __init__(self, net: nn.Module, *, layers: int = 8, p: float = 0.05, passes: int = 128,
                 dropout_after: tuple[int, ...] | None = None, chunk: int = 32):
        super().__init__()
        if not 0 < p < 1:
            raise ValueError(f"MCDropoutNet: p must be in (0, 1), got {p}")
        if passes < 2:
            raise ValueError(f"MCDropoutNet: passes must be >= 2, got {passes}")
        self.split = Split(net, layers)
        self.p, self.passes, self.chunk = float(p), int(passes), int(chunk)
        tail = self.split.tail_linear
        if dropout_after is None:
            if self.split.architecture == "dncnn":  # every other layer, never after the output layer
                dropout_after = tuple(j for j in range(0, len(tail) - 1, 2))
            else:  # after the up-sampling (transposed convolutions)
                steps = {k: s for _, s, k in self.split.tail_steps() if k is not None}
                dropout_after = tuple(j for j, k in enumerate(tail)
                                      if isinstance(steps[k], LinearStep) and steps[k].kind == "convT")
        self.dropout_after = tuple(int(j) for j in dropout_after)
        if not self.dropout_after or any(not 0 <= j < len(tail) - 1 for j in self.dropout_after):
            raise ValueError(f"MCDropoutNet: dropout_after must name tail layers before the last, got {dropout_after}")
        self.weights = nn.ParameterList([nn.Parameter(self.split.weight(k).clone()) for k in tail])
        self.biases = nn.ParameterList([nn.Parameter(self.split.bias(k).clone()) for k in tail])

    def _tail_weights(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        return {k: (self.weights[j], self.biases[j]) for j, k in enumerate(self.split.tail_linear)}

    def sample(self, trunk: TrunkOutput, generator: torch.Generator | None) -> torch.Tensor:
        """One stochastic pass per sample of the batch (independent masks)."""
        first = self.split.tail_linear[0]
        drop = {first + j for j in self.dropout_after}

        def after(k: int, z: torch.Tensor) -> torch.Tensor:
            return z * draw_mask(z.shape, self.p, z, generator) if k in drop else z

        return self.split.run(trunk, self._tail_weights(), after)

    def mean_prediction(self, y: torch.Tensor, physics) -> torch.Tensor:
        """The variant's deterministic output (dropout off, inverted scaling makes it the mean field)."""
        return self.split.run(self.split.trunk(y, physics), self._tail_weights())

    def passes_of(self, y: torch.Tensor, physics, generator: torch.Generator | None,
                  passes: int | None = None) -> torch.Tensor:
        """(T, B, 1, n, n) outputs of T independent passes."""
        passes = int(passes or self.passes)
        trunk = self.split.trunk(y, physics)
        batch = y.shape[0]
        outs = []
        done = 0
        while done < passes:
            t = min(self.chunk, passes - done)

            def rep(z):
                return z.unsqueeze(0).expand(t, *z.shape).reshape(t * batch, *z.shape[1:])

            stacked = TrunkOutput(rep(trunk.state), tuple(rep(s) for s in trunk.skips), rep(trunk.base), trunk.sign)
            outs.append(self.sample(stacked, generator).view(t, batch, *trunk.base.shape[1:]))
            done += t
        return torch.cat(outs)

    def uncertainty(self, y: torch.Tensor, physics, generator: torch.Generator | None = None,
                    passes: int | None = None) -> torch.Tensor:
        return self.passes_of(y, physics, generator, passes).std(dim=0)

    def loss(self, y: torch.Tensor, physics, x: torch.Tensor, generator: torch.Generator | None = None):
        return torch.nn.functional.mse_loss(self.sample(self.split.trunk(y, physics), generator), x)

    def companion_state(self) -> dict[str, torch.Tensor]:
        out = {}
        for j, k in enumerate(self.split.tail_linear):
            out[f"weight.{k}"] = self.weights[j].detach().float().contiguous()
            out[f"bias.{k}"] = self.biases[j].detach().float().contiguous()
        return out

    @torch.no_grad()
    def load_companion_state(self, state: dict[str, torch.Tensor]) -> None:
        for j, k in enumerate(self.split.tail_linear):
            self.weights[j].copy_(state[f"weight.{k}"].to(self.weights[j]))
            self.biases[j].copy_(state[f"bias.{k}"].to(self.biases[j]))

    @torch.no_grad()
    def test_metrics(self, y: torch.Tensor, physics, x: torch.Tensor) -> dict[str, float]:
        from survey.metrics import psnr

        g = torch.Generator(device=y.device).manual_seed(0)
        runs = self.passes_of(y, physics, g, passes=16)
        base = self.split.net(y, physics)
        return {"psnr_variant": float(psnr(self.mean_prediction(y, physics), x).mean()),
                "psnr_mc_mean": float(psnr(runs.mean(0), x).mean()),
                "psnr_base": float(psnr(base, x).mean()), "mean_std_T16": float(runs.std(0).mean())}


__all__ = ["MCDropoutNet"]
