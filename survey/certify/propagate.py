"""A certified bound on max ||f(A(x + r)) - f(Ax)|| over the ball ||r|| <= rho, by bound propagation: the
operations programs are written in, the clean and tangent passes, and the interval bound.

Written around the clean point: every nonlinearity phi (ReLU, leaky ReLU with slope a <= 1, |z|, 2 x 2
max-pooling) is convex, so phi(z0 + d) - phi(z0) = D0 d + xi with D0 = phi'(z0) and 0 <= xi_j <= gamma_j(beta_j)
whenever |d_j| <= beta_j:

    ReLU                 gamma = max(0, beta - |z0|)                (exact: 0 for a neuron that cannot flip)
    leaky ReLU(a)        gamma = (1 - a) max(0, beta - |z0|)
    |z| (eps in root)    gamma = min((1 + |g|) b, b^2 / (2 m_min)),  b = ||(beta_re, beta_im)||, g the clean
                         gradient (|z| is 1-Lipschitz), m_min the least value of sqrt(|z|^2 + eps) within b of
                         z0 (Taylor with the Hessian bound 1 / m)
    2 x 2 max-pooling    gamma = max(0, max_{i != i*} (a_i - a_i* + beta_i + beta_i*)), i* the clean argmax

Then f(A(x + r)) - f(Ax) = J r + R, J the clean Jacobian. The interval bound (`interval_bound`) carries the
xi's forward as boxes (centre through W, half-width through |W|: |W_2 D W_1| <= |W_2| |D| |W_1|), with beta =
rho ||row of the clean Jacobian|| + the box arriving, and gives rho ||J||_cert + ||s||_2, |R| <= s. The row norms
and J come from the tangent map applied to every input basis vector (batched), once per image (`linearise`).
`local_bound` reports the least of this and the back-substituted bound (survey.certify.backsub), which keeps
the cancellations between paths that the boxes lose. On a linear network both are rho sigma_1, exactly.
Arithmetic is float64; the rounding of the network's own evaluation is covered by a relative margin EVAL_MARGIN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: Relative margin for the rounding of the network's float64 evaluation (forward and tangent passes).
EVAL_MARGIN = 1e-9


class Unsupported(Exception):
    """A layer without a bound rule (the message names it)."""


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    if not bn.track_running_stats or bn.running_var is None:
        raise Unsupported(f"{type(bn).__name__} without running statistics")
    scale = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        scale, shift = scale * bn.weight.double(), shift * bn.weight.double() + bn.bias.double()
    return scale, shift


def _linear(module: nn.Module, z: torch.Tensor, *, bias: bool, absolute: bool) -> torch.Tensor:
    """An affine layer applied to z: with its bias (clean values) or without (tangents, deviations), and
    with |weights| for the deviation pass."""
    if isinstance(module, nn.BatchNorm2d):
        scale, shift = _bn_affine(module)
        scale = scale.abs() if absolute else scale
        out = z * scale.view(1, -1, 1, 1)
        return out + shift.view(1, -1, 1, 1) if bias else out
    if isinstance(module, nn.AvgPool2d):  # nonnegative weights: |W| z = W z
        if module.divisor_override is not None or (module.padding not in (0, (0, 0)) and not module.count_include_pad):
            raise Unsupported(f"{module}: only average pooling that counts its zero padding has a bound rule")
        return F.avg_pool2d(z, module.kernel_size, module.stride, module.padding, module.ceil_mode, True)
    if isinstance(module, nn.Upsample):
        if module.mode not in ("nearest", "bilinear"):  # both with nonnegative interpolation weights
            raise Unsupported(f"{module}: only nearest and bilinear upsampling have a bound rule")
        return F.interpolate(z, module.size, module.scale_factor, module.mode,
                             module.align_corners if module.mode == "bilinear" else None)
    w = module.weight.double()
    w = w.abs() if absolute else w
    b = module.bias.double() if (bias and module.bias is not None) else None
    if isinstance(module, nn.Linear):
        return F.linear(z, w, b)
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        if isinstance(module.padding, str) or module.padding_mode not in ("zeros", "circular"):
            raise Unsupported(f"{type(module).__name__} with padding {module.padding!r} / {module.padding_mode!r}")
        if isinstance(module, nn.ConvTranspose2d):
            return F.conv_transpose2d(z, w, b, module.stride, module.padding, module.output_padding, module.groups,
                                      module.dilation)
        if module.padding_mode == "circular":
            ph, pw = module.padding
            z = F.pad(z, (pw, pw, ph, ph), mode="circular")
            return F.conv2d(z, w, b, module.stride, 0, module.dilation, module.groups)
        return F.conv2d(z, w, b, module.stride, module.padding, module.dilation, module.groups)
    raise Unsupported(f"no bound rule for {type(module).__name__}")


AFFINE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d, nn.AvgPool2d, nn.Upsample)
PASS = (nn.Identity, nn.Dropout)


class Ops:
    """The operations a program (survey.certify.programs) is written in; three subclasses give them their
    meaning: clean values, tangents (batched), and elementwise deviation bounds."""

    def __init__(self):
        self.index = 0  # nonlinearity counter: the programs call them in the same order in every pass

    def next(self) -> int:
        self.index += 1
        return self.index - 1

    def sequential(self, seq: nn.Module, z, name: str = "body"):
        """Run an nn.Sequential (or one module) of supported layers."""
        modules = list(seq) if isinstance(seq, nn.Sequential) else [seq]
        for i, m in enumerate(modules):
            if isinstance(m, AFFINE):
                z = self.affine(m, z)
            elif isinstance(m, nn.ReLU):
                z = self.leaky(z, 0.0)
            elif isinstance(m, nn.LeakyReLU):
                z = self.leaky(z, float(m.negative_slope))
            elif isinstance(m, nn.MaxPool2d):
                if m.kernel_size not in (2, (2, 2)) or (m.stride not in (2, (2, 2), None)) or m.padding not in (0, (0, 0)) \
                        or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                    raise Unsupported(f"{name}[{i}] {m}: only 2 x 2 max-pooling with stride 2 has a bound rule")
                z = self.maxpool(z)
            elif isinstance(m, nn.Sequential):
                z = self.sequential(m, z, f"{name}[{i}]")
            elif isinstance(m, nn.Flatten):
                z = z.flatten(1)
            elif isinstance(m, PASS):
                continue
            else:
                raise Unsupported(f"{name}[{i}] {type(m).__name__}: no bound rule")
        return z

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def cat(self, parts, dim: int = 1):
        return torch.cat(parts, dim)

    def take(self, z, channels: slice):
        return z[:, channels]


class CleanOps(Ops):
    """Clean values; records the input of every nonlinearity."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.kinds: list[tuple] = []       # ("leaky", slope), ("magnitude", eps), ("maxpool",)
        self.shapes: list[torch.Size] = []  # output shape of each nonlinearity

    def _note(self, z, kind, out):
        self.next()
        self.inputs.append(z)
        self.kinds.append(kind)
        self.shapes.append(out.shape)
        return out

    def affine(self, m, z):
        return _linear(m, z, bias=True, absolute=False)

    def linear_map(self, fn, z, absolute_fn=None):
        return fn(z)

    def leaky(self, z, slope):
        if slope > 1:
            raise Unsupported(f"LeakyReLU with negative_slope {slope} > 1: no bound rule")
        return self._note(z, ("leaky", slope), torch.where(z > 0, z, slope * z))

    def magnitude(self, z, eps):
        return self._note(z, ("magnitude", eps), torch.sqrt(z[:, :1] ** 2 + z[:, 1:2] ** 2 + eps))

    def maxpool(self, z):
        return self._note(z, ("maxpool",), F.max_pool2d(z, 2))


def _windows(z: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H/2, W/2, 4): the 2 x 2 windows of max-pooling."""
    b, c, h, w = z.shape
    return z[:, :, :h // 2 * 2, :w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5) \
        .reshape(b, c, h // 2, w // 2, 4)


class TangentOps(Ops):
    """The clean Jacobian applied to a batch of tangents; accumulates the squared row norms at every
    nonlinearity's input."""

    def __init__(self, clean: CleanOps, squares: list[torch.Tensor] | None = None):
        super().__init__()
        self.clean = clean
        self.squares = squares if squares is not None else [torch.zeros_like(z[0]) for z in clean.inputs]

    def _record(self, k, t):
        self.squares[k] += t.square().sum(0)

    def affine(self, m, z):
        return _linear(m, z, bias=False, absolute=False)

    def linear_map(self, fn, z, absolute_fn=None):
        return fn(z)

    def leaky(self, t, slope):
        k = self.next()
        self._record(k, t)
        z0 = self.clean.inputs[k]
        return t * torch.where(z0 > 0, 1.0, slope).to(t.dtype)

    def magnitude(self, t, eps):
        k = self.next()
        self._record(k, t)
        z0 = self.clean.inputs[k]
        m0 = torch.sqrt(z0[:, :1] ** 2 + z0[:, 1:2] ** 2 + eps)
        return (z0[:, :1] * t[:, :1] + z0[:, 1:2] * t[:, 1:2]) / m0

    def maxpool(self, t):
        k = self.next()
        self._record(k, t)
        win = _windows(self.clean.inputs[k])
        arg = win.argmax(-1, keepdim=True)
        tw = _windows(t)
        return tw.gather(-1, arg.expand(tw.shape[0], *arg.shape[1:])).squeeze(-1)


class DeviationOps(Ops):
    """Bounds on the deviation R of each value from its linearisation, for one radius rho, as a box
    [c - w, c + w] carried in a batch of two (row 0: centre c, row 1: half-width w): linear layers map c with
    their weights and w with their absolute values; each nonlinearity adds its deviation xi, which has a
    known sign (>= 0 for all four: each is convex, so it lies above its linearisation; leaky ReLU with a slope
    at most 1), so it enters as the box [0, gamma] or [-gamma, 0] (module docstring)."""

    def __init__(self, clean: CleanOps, rows: list[torch.Tensor], rho: float):
        super().__init__()
        self.clean, self.rows, self.rho = clean, rows, rho
        self.unstable = 0
        self.units = 0

    def _beta(self, k, box):
        """Bound on |input change| of nonlinearity k: rho ||row of J|| plus the deviations arriving."""
        return self.rho * self.rows[k][None] * (1 + EVAL_MARGIN) + box[:1].abs() + box[1:]

    @staticmethod
    def _box(centre, width):
        return torch.cat([centre, width])

    def affine(self, m, z):
        return self._box(_linear(m, z[:1], bias=False, absolute=False), _linear(m, z[1:], bias=False, absolute=True))

    def sub(self, a, b):
        return self._box(a[:1] - b[:1], a[1:] + b[1:])

    def linear_map(self, fn, box, absolute_fn=None):
        if bool((box != 0).any()):
            raise Unsupported("a linear map without an absolute-value rule after a nonlinearity")
        out = fn(box[:1])
        return self._box(torch.zeros_like(out), torch.zeros_like(out))

    def _signed(self, d0, box, gamma, sign):
        """d0 R + xi with xi in [0, gamma] (sign +1), [-gamma, 0] (-1)."""
        return self._box(d0 * box[:1] + sign * gamma / 2, d0.abs() * box[1:] + gamma / 2)

    def leaky(self, box, slope):
        k = self.next()
        z0 = self.clean.inputs[k]
        flip = (self._beta(k, box) - z0.abs()).clamp_min(0)
        self.unstable += int((flip > 0).sum())
        self.units += flip.numel()
        d0 = torch.where(z0 > 0, 1.0, slope).to(box.dtype)
        return self._signed(d0, box, (1 - slope) * flip, 1.0)

    def magnitude(self, box, eps):
        k = self.next()
        z0 = self.clean.inputs[k]
        beta = self._beta(k, box)
        b = torch.sqrt(beta[:, :1] ** 2 + beta[:, 1:2] ** 2)
        norm0 = torch.sqrt(z0[:, :1] ** 2 + z0[:, 1:2] ** 2)
        m0 = torch.sqrt(norm0 ** 2 + eps)
        m_min = torch.sqrt((norm0 - b).clamp_min(0) ** 2 + eps)
        gamma = torch.minimum((1 + norm0 / m0) * b, b * b / (2 * m_min))
        self.units += gamma.numel()
        self.unstable += int((b >= norm0).sum())
        g = z0 / m0
        centre = (g * box[:1]).sum(1, keepdim=True) + gamma / 2
        width = (g.abs() * box[1:]).sum(1, keepdim=True) + gamma / 2
        return self._box(centre, width)

    def maxpool(self, box):
        k = self.next()
        win = _windows(self.clean.inputs[k])
        beta = _windows(self._beta(k, box))
        top, arg = win.max(-1, keepdim=True)
        others = win - top + beta + beta.gather(-1, arg)
        others = others.masked_fill(torch.zeros_like(win, dtype=torch.bool).scatter(-1, arg, True), -math.inf)
        gamma = others.amax(-1).clamp_min(0)
        self.unstable += int((gamma > 0).sum())
        self.units += gamma.numel()
        picked = _windows(box).gather(-1, arg.expand(2, *arg.shape[1:])).squeeze(-1)
        return self._box(picked[:1] + gamma / 2, picked[1:] + gamma / 2)


class Program(NamedTuple):
    """A network written in Ops: `run(ops, h) -> output`, h the network input as (B, C, n, n) real
    channels; `lift(r)`: the linear map from the perturbation to h (batched), `base`: h at the clean point;
    `coefficients(g)`: a batch of gradients w.r.t. the input -> coefficients on the basis of the Jacobian's columns
    (None: the flattened gradient)."""

    run: Callable[[Ops, torch.Tensor], torch.Tensor]
    lift: Callable[[torch.Tensor], torch.Tensor]
    base: torch.Tensor
    coefficients: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class Linearised:
    """What one image's tangent pass leaves: clean output, the dense Jacobian J (outputs, inputs), its
    certified norm, and the row norms of the clean Jacobian at every nonlinearity's input."""

    clean: CleanOps
    output: torch.Tensor
    jacobian: torch.Tensor
    norm: float
    rows: list[torch.Tensor]
    inputs: int
    meta: dict[str, Any] = field(default_factory=dict)


def linearise(program: Program, basis: Callable[[torch.Tensor], torch.Tensor], count: int, *,
              chunk: int = 128) -> Linearised:
    """Clean pass, then the tangent pass over `count` input basis vectors (basis(indices) -> batch of
    perturbations), `chunk` at a time; the dense Jacobian's certified norm."""
    import time

    from survey.certify.spectral import dense_bound

    start = time.perf_counter()
    clean = CleanOps()
    with torch.no_grad():
        output = program.run(clean, program.base)
        squares = None
        columns = []
        for part in torch.arange(count).split(chunk):
            tangent = TangentOps(clean, squares)
            out = program.run(tangent, program.lift(basis(part)))
            squares = tangent.squares
            columns.append(out.reshape(part.numel(), -1))
    jac = torch.cat(columns).T.contiguous()
    rows = [torch.sqrt(q) for q in (squares or [])]
    norm = dense_bound(jac.cpu()) * (1 + EVAL_MARGIN)
    return Linearised(clean, output, jac, norm, rows, count, {"seconds": time.perf_counter() - start})


class LocalBound(NamedTuple):
    """The certified bound at one radius: bound >= max ||f(A(x + r)) - f(Ax)|| over ||r|| <= rho, the least of
    `backsub` (back-substitution, survey.certify.backsub) and `interval` (the deviations carried as boxes);
    linear = rho ||J||_cert, remainder: the nonlinear units' share (bound - linear, up to rounding); unstable / units: nonlinear units that may leave their
    clean piece under back-substitution's bounds, of all; seconds: what this radius cost after the linearisation."""

    rho: float
    bound: float
    linear: float
    remainder: float
    unstable: int
    units: int
    interval: float = math.inf
    backsub: float = math.inf
    seconds: float = 0.0


def interval_bound(program: Program, lin: Linearised, rho: float) -> tuple[float, float]:
    """(bound, remainder) with the deviations carried forward as boxes (DeviationOps)."""
    dev = DeviationOps(lin.clean, lin.rows, float(rho))
    with torch.no_grad():
        zero = torch.zeros_like(program.base)
        box = program.run(dev, torch.cat([zero, zero.real if zero.is_complex() else zero]))
    remainder = float(torch.linalg.vector_norm((box[:1].abs() + box[1:]).double())) * (1 + EVAL_MARGIN)
    return (float(rho) * lin.norm + remainder) * (1 + 4 * 2.0 ** -53), remainder


def local_bound(program: Program, lin: Linearised, rho: float, *, columns: int = 4096,
                backward: bool = True) -> LocalBound:
    """The certified bound at radius `rho` from a linearisation: the least of back-substitution and intervals."""
    from survey.certify.backsub import backsub_bound

    import time

    start = time.perf_counter()
    interval, rest = interval_bound(program, lin, rho)
    back = backsub_bound(program, lin, float(rho), columns=columns, backward=backward)
    linear = float(rho) * lin.norm
    took = time.perf_counter() - start
    if interval < back.bound:
        return LocalBound(float(rho), interval, linear, rest, back.unstable, back.units, interval, back.bound, took)
    return LocalBound(float(rho), back.bound, linear, back.bound - linear if back.coordinate < back.spectral
                      else back.remainder, back.unstable, back.units, interval, back.bound, took)


__all__ = ["CleanOps", "DeviationOps", "EVAL_MARGIN", "LocalBound", "Linearised", "Ops", "Program", "TangentOps",
           "Unsupported", "interval_bound", "linearise", "local_bound"]
