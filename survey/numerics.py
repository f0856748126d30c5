"""Numerics every test shares, defined once: scoring convention, eval mode, unrolled solvers, masks, draws.

The scoring convention for complex outputs (`real_image`): a reconstruction is scored by the real part
of what it returns. Ground truths are real images; a method that returns a complex image (H = A* on a
Fourier operator, a solver in complex arithmetic) is projected orthogonally onto the real images. The
projection is linear, so H stays the linear map its exact answers assume (a gain of sigma_1 along v_1,
the adjointness of its Jacobian), and the imaginary part, energy no real image carries, is neither
rewarded nor punished. The magnitude |.| is not used: it is nonlinear, folds a sign error into a bright
pixel and lifts the noise floor of H. Network, reference and H go through the same `reconstruct`, so
every task scores all three the same way on the same input.

Layer: below the tasks and the networks (it imports only torch), so tasks, survey.rare and
survey.nets can all use it.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn


def real_image(t: torch.Tensor) -> torch.Tensor:
    """The scoring convention: the real part of a complex image, a real tensor unchanged (any shape)."""
    return t.real if torch.is_complex(t) else t


def reconstruct(method: Callable[..., torch.Tensor], y: torch.Tensor, physics) -> torch.Tensor:
    """`method(y, physics)` scored by the convention: (B, *measurement) -> (B, 1, n, n) real."""
    return real_image(method(y, physics))


def easy_reconstruction(y: torch.Tensor, physics) -> torch.Tensor:
    """H(y) scored by the convention (Re A* y for Fourier, filtered back-projection for Radon)."""
    return real_image(physics.H(y))


def real_like(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`t` brought into the real-or-complex space of `like`: the real part when `like` is real.

    The image-domain gradient rule: Re A* g is the gradient of a real-valued loss in a real image r."""
    return t.real if torch.is_complex(t) and not torch.is_complex(like) else t


def real_dtype(t: torch.Tensor) -> torch.dtype:
    """float dtype of `t`'s entries (float64 for complex128)."""
    return t.real.dtype if torch.is_complex(t) else t.dtype


def squared_error(diff: torch.Tensor) -> torch.Tensor:
    """|diff|^2 entry-wise, real for complex diff."""
    return diff.abs().square() if torch.is_complex(diff) else diff.square()


@contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """Run `module` in eval mode (no dropout, BatchNorm statistics frozen, so samples do not depend on
    their batch), then restore its mode; anything that is not an nn.Module passes through."""
    if not isinstance(module, nn.Module):
        yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def differentiable(solver: Any) -> Any:
    """A solver in its unrolled (autograd-carrying) mode, without touching the original; others unchanged."""
    if hasattr(solver, "unrolled") and not solver.unrolled:
        solver = copy.copy(solver)
        solver.unrolled = True
    return solver


def measured_mask(physics, like: torch.Tensor) -> torch.Tensor:
    """0/1 mask of the measured entries (`physics.measured_mask()`), in the real dtype and on the device of
    `like` (a measurement-shaped tensor): (1, *measurement_shape), broadcastable to `like`."""
    return physics.measured_mask().to(device=like.device, dtype=real_dtype(like))


def standard_gaussian(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gaussian of `shape` in `like`'s dtype (complex: independent parts, E|z|^2 = 1), drawn on
    the generator's device and moved to `like`'s."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def per_sample(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """(N,) -> (N, 1, ..., 1), broadcastable against an `ndim`-dimensional batch."""
    return t.view(-1, *([1] * (ndim - 1)))


def best_of(score: torch.Tensor, groups: int, per_group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best of each group of candidates (e.g. the starts of one image and budget), by largest score.

    score: (groups * per_group,) group-major -> winner (groups,) index within its group, and flat (groups,)
    its index into `score`; ties, and scores within a relative 1e-9 of the best (rounding, e.g. the +v and -v
    starts of a linear map), go to the first candidate, so the choice does not depend on the CPU's rounding."""
    table = score.view(groups, per_group)
    top = table.max(dim=1, keepdim=True).values
    near = table >= top - 1e-9 * top.abs()
    winner = near.to(torch.int8).argmax(dim=1)      # the first True
    flat = torch.arange(groups, device=winner.device) * per_group + winner
    return winner, flat


def cosine_step(k: int, iterations: int, first: float, last: float) -> float:
    """Step size at iteration k of `iterations`, decaying from `first` to `last` along a half cosine."""
    return last + (first - last) * 0.5 * (1 + math.cos(math.pi * k / max(iterations, 1)))


def ascent_step(r: torch.Tensor, velocity: torch.Tensor, grad: torch.Tensor, radius: torch.Tensor, alpha: float,
                momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of projected normalised-gradient ascent with momentum on the balls ||r_i|| <= radius_i.

    m <- momentum m + g / ||g||,  r <- r + alpha radius m / ||m||,  then r scaled back into its ball.
    r, velocity, grad: (N, ...); radius: (N,). Returns (r, velocity)."""
    tiny = torch.finfo(radius.dtype).tiny
    unit = grad / per_sample(_norms(grad).clamp_min(tiny), grad.ndim)
    velocity = momentum * velocity + unit
    direction = velocity / per_sample(_norms(velocity).clamp_min(tiny), r.ndim)
    r = r + alpha * per_sample(radius, r.ndim) * direction
    return r * per_sample((radius / _norms(r).clamp_min(tiny)).clamp(max=1.0), r.ndim), velocity


def _norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


def copy_generator(generator: torch.Generator) -> torch.Generator:
    """A new generator in `generator`'s state: another method gets the same draws (common random numbers)."""
    twin = torch.Generator(device=generator.device)
    twin.set_state(generator.get_state())
    return twin


__all__ = ["ascent_step", "best_of", "copy_generator", "cosine_step", "differentiable", "easy_reconstruction", "eval_mode", "measured_mask", "per_sample",
           "real_dtype", "real_image", "real_like", "reconstruct", "squared_error", "standard_gaussian"]
