"""Linear bound propagation with back-substitution, centred at the clean point.

Every nonlinearity phi (ReLU, leaky ReLU with slope a <= 1, |z|, 2 x 2 max-pooling) is convex, so at its clean
input z0 it lies above its tangent: phi(z0 + d) - phi(z0) = D0 d + xi with xi >= 0, and xi <= gamma whenever
lo <= d <= hi (elementwise):

    ReLU / leaky ReLU(a)   gamma = (1 - a) max(0, -(z0 + lo))  where z0 > 0 (D0 = 1),
                           gamma = (1 - a) max(0, z0 + hi)     elsewhere (D0 = a)
    |z| (eps in the root)  gamma = min((1 + |g|) b, b^2 / (2 m_min)), b the largest |change| of (re, im),
                           g the clean gradient (|z| is 1-Lipschitz), m_min as in survey.certify.propagate
    2 x 2 max-pooling      gamma = max(0, max_{i != i*} (z0_i - z0_i* + hi_i - lo_i*)), i* the clean argmax

With these relaxations (slopes D0 in the lower and the upper bound alike) the network's deviation is exactly
linear in r and in the xi's: for every value v of the network (a nonlinearity's input, the output)

    v(x + r) - v(x) = J_v r + sum_m J_{m -> v} xi_m,

J_v the clean Jacobian of v, J_{m -> v} the clean Jacobian from nonlinearity m's output to v (composed through
every later layer, skip connections, concatenations: back-substitution, not a product of |W|). So

    -rho ||row of J_v|| - N_v  <=  v(x + r) - v(x)  <=  rho ||row of J_v|| + P_v,
    P_v = sum_m (J_{m -> v})^+ gamma_m,   N_v = sum_m (J_{m -> v})^- gamma_m,

and the bounds at each nonlinearity give its gamma. The row norms come from the tangent pass (one per input
basis vector, survey.certify.propagate.linearise). P and N are built layer by layer: the units of layer m that can
leave their clean piece (gamma > 0) are pushed forward as columns e_u gamma_u through the clean linearisation
(the tangent semantics of the program, convolutions as convolutions, never a dense matrix at image size), and
each later value accumulates their positive and negative parts. Once `columns` units have been pushed (over all
layers), a layer whose units would exceed that is pushed as one box instead ([0, gamma] through W and |W|: looser,
but one pass). At the output,

    max ||f(A(x + r)) - f(Ax)|| <= min( rho ||J||_cert + ||max(P, N)||_2,  ||rho ||J_j|| + max(P_j, N_j)||_2 ),

the first exact (rho sigma_1) on a linear network, the second per output coordinate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from survey.certify.propagate import EVAL_MARGIN, CleanOps, Linearised, Ops, Program, Unsupported, _linear, _windows


def _gamma(kind: tuple, z0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Upper bound on xi (output-shaped, >= 0) of one nonlinearity over lo <= d <= hi (module docstring)."""
    if kind[0] == "leaky":
        a = kind[1]
        return (1 - a) * torch.where(z0 > 0, (-(z0 + lo)).clamp_min(0), (z0 + hi).clamp_min(0))
    if kind[0] == "magnitude":
        eps = kind[1]
        big = torch.maximum(lo.abs(), hi.abs())
        b = torch.sqrt(big[:, :1] ** 2 + big[:, 1:2] ** 2)
        norm0 = torch.sqrt(z0[:, :1] ** 2 + z0[:, 1:2] ** 2)
        m_min = torch.sqrt((norm0 - b).clamp_min(0) ** 2 + eps)
        slope = norm0 / torch.sqrt(norm0 ** 2 + eps)  # |gradient| at the clean point, <= 1
        return torch.minimum((1 + slope) * b, b * b / (2 * m_min))
    win = _windows(z0)
    top, arg = win.max(-1, keepdim=True)
    spread = win - top + _windows(hi) - _windows(lo).gather(-1, arg)
    spread = spread.masked_fill(torch.zeros_like(win, dtype=torch.bool).scatter(-1, arg, True), -math.inf)
    return spread.amax(-1).clamp_min(0)


def _flips(kind: tuple, z0, lo, hi, gamma) -> tuple[int, int]:
    """(units that may leave their clean piece, units) of one nonlinearity."""
    if kind[0] == "leaky":
        moving = ((z0 + lo) < 0) & ((z0 + hi) > 0) if kind[1] != 1 else torch.zeros_like(z0, dtype=torch.bool)
        return int(moving.sum()), z0.numel()
    return int((gamma > 0).sum()), gamma.numel()


def _match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand a batch-1 (zero) operand to the other's batch."""
    if a.shape[0] == b.shape[0]:
        return a, b
    if a.shape[0] == 1:
        return a.expand(b.shape[0], *a.shape[1:]), b
    return a, b.expand(a.shape[0], *b.shape[1:])


class PushOps(Ops):
    """Pushes xi of nonlinearity `source` forward through the clean linearisation and accumulates, at every later
    nonlinearity's input and at the output, the positive and negative parts of what arrives.

    Columns (box=False): `inject` (K, *shape) holds e_u gamma_u, one unit per column; each column c arriving as t
    adds t^+ to P and t^- to N. Box (box=True): `inject` (2, *shape) is [centre; half-width] of [0, gamma];
    linear layers map the centre by W and the half-width by |W|; [c - w, c + w] adds (c + w)^+ and (c - w)^-.
    Before `source` every tangent is a batch-1 zero (cheap)."""

    def __init__(self, clean: CleanOps, source: int, inject: torch.Tensor, pos: list, neg: list, box: bool):
        super().__init__()
        self.clean, self.source, self.inject, self.pos, self.neg, self.box = clean, source, inject, pos, neg, box

    def _live(self, t) -> bool:
        return self.box and t.shape[0] == 2

    def _accumulate(self, k, t):
        if self.box:
            if t.shape[0] != 2:
                return
            self.pos[k] += (t[0] + t[1]).clamp_min(0)
            self.neg[k] += (t[1] - t[0]).clamp_min(0)
        else:
            self.pos[k] += t.clamp_min(0).sum(0)
            self.neg[k] += (-t).clamp_min(0).sum(0)

    def affine(self, m, z):
        if self._live(z):
            return torch.cat([_linear(m, z[:1], bias=False, absolute=False), _linear(m, z[1:], bias=False, absolute=True)])
        return _linear(m, z, bias=False, absolute=False)

    def linear_map(self, fn, z, absolute_fn=None):
        if self.box and self.index > self.source:
            raise Unsupported("a linear map without an absolute-value rule after a nonlinearity")
        return fn(z)

    def sub(self, a, b):
        a, b = _match(a, b)
        if self._live(a):
            return torch.cat([a[:1] - b[:1], a[1:] + b[1:]])
        return a - b

    def add(self, a, b):
        a, b = _match(a, b)
        return a + b

    def cat(self, parts, dim: int = 1):
        batch = max(p.shape[0] for p in parts)
        return torch.cat([p.expand(batch, *p.shape[1:]) for p in parts], dim)

    def _nonlinear(self, t, slope_fn):
        k = self.next()
        if k < self.source:
            return torch.zeros(1, *self.clean.shapes[k][1:], dtype=t.dtype, device=t.device)
        if k == self.source:
            return self.inject
        self._accumulate(k, t)
        return slope_fn(k, t)

    def leaky(self, t, slope):
        def apply(k, t):
            d0 = torch.where(self.clean.inputs[k] > 0, 1.0, slope).to(t.dtype)
            return torch.cat([t[:1] * d0, t[1:] * d0.abs()]) if self._live(t) else t * d0
        return self._nonlinear(t, apply)

    def magnitude(self, t, eps):
        def apply(k, t):
            z0 = self.clean.inputs[k]
            g = z0 / torch.sqrt(z0[:, :1] ** 2 + z0[:, 1:2] ** 2 + eps)
            if self._live(t):
                return torch.cat([(g * t[:1]).sum(1, keepdim=True), (g.abs() * t[1:]).sum(1, keepdim=True)])
            return (g * t).sum(1, keepdim=True)
        return self._nonlinear(t, apply)

    def maxpool(self, t):
        def apply(k, t):
            arg = _windows(self.clean.inputs[k]).argmax(-1, keepdim=True)
            tw = _windows(t)
            return tw.gather(-1, arg.expand(tw.shape[0], *arg.shape[1:])).squeeze(-1)
        return self._nonlinear(t, apply)


def _push(program: Program, ops: PushOps, zero: torch.Tensor, count: int) -> None:
    """One pass of `ops`; what reaches the output is accumulated at index `count`."""
    ops._accumulate(count, program.run(ops, zero))


class _Chord(torch.autograd.Function):
    """Tangent of a ReLU-type unit, D0 t; backward: the coefficient on its input for an upper bound, D0 g + alpha
    g^+, with g^+ beta added to `const` (the chord xi <= alpha d + beta of the unstable units, xi >= 0 else)."""

    @staticmethod
    def forward(ctx, t, d0, alpha, beta, const):
        ctx.save_for_backward(d0, alpha, beta)
        ctx.const = const
        return t * d0

    @staticmethod
    def backward(ctx, g):
        d0, alpha, beta = ctx.saved_tensors
        up = g.clamp_min(0)
        ctx.const += (up * beta).flatten(1).sum(1)
        return g * d0 + up * alpha, None, None, None, None


class _Box(torch.autograd.Function):
    """Identity on a nonlinearity's tangent output; backward adds g^+ gamma to `const` (xi in [0, gamma])."""

    @staticmethod
    def forward(ctx, t, gamma, const):
        ctx.save_for_backward(gamma)
        ctx.const = const
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        (gamma,) = ctx.saved_tensors
        ctx.const += (g.clamp_min(0) * gamma).flatten(1).sum(1)
        return g, None, None


class _Const(list):
    """A mutable holder for the constant term, one entry per objective (the autograd Functions add to it)."""

    def __init__(self, size, like):
        super().__init__([torch.zeros(size, dtype=like.dtype, device=like.device)])

    def __iadd__(self, other):
        self[0] = self[0] + other
        return self


class BackwardOps(Ops):
    """The clean linearisation written so that autograd's backward pass is the linear bound's back-substitution:
    the objective's coefficients travel backward through the transposed layers (conv_transpose for a
    convolution, by autograd), and at each nonlinearity pick up the chord of its unstable units (upper bound)."""

    def __init__(self, clean: CleanOps, relax: list, const):
        super().__init__()
        self.clean, self.relax, self.const = clean, relax, const

    def affine(self, m, z):
        return _linear(m, z, bias=False, absolute=False)

    def linear_map(self, fn, z, absolute_fn=None):
        return fn(z)

    def leaky(self, t, slope):
        k = self.next()
        d0, alpha, beta = self.relax[k]
        return _Chord.apply(t, d0, alpha, beta, self.const)

    def magnitude(self, t, eps):
        k = self.next()
        z0 = self.clean.inputs[k]
        g = z0 / torch.sqrt(z0[:, :1] ** 2 + z0[:, 1:2] ** 2 + eps)
        return _Box.apply((g * t).sum(1, keepdim=True), self.relax[k][2], self.const)

    def maxpool(self, t):
        k = self.next()
        arg = _windows(self.clean.inputs[k]).argmax(-1, keepdim=True)
        tw = _windows(t)
        out = tw.gather(-1, arg.expand(tw.shape[0], *arg.shape[1:])).squeeze(-1)
        return _Box.apply(out, self.relax[k][2], self.const)


def _relaxations(clean: CleanOps, bounds: list) -> list:
    """Per nonlinearity: (D0, alpha, beta) of the chord for ReLU-type units, (None, None, gamma) otherwise."""
    out = []
    for kind, z0, (lo, hi, gamma) in zip(clean.kinds, clean.inputs, bounds):
        if kind[0] != "leaky":
            out.append((None, None, gamma))
            continue
        d0 = torch.where(z0 > 0, 1.0, kind[1]).to(z0.dtype)
        span = torch.where(gamma > 0, hi - lo, 1.0)
        slope = torch.where(gamma > 0, gamma / span, 0.0)
        alpha = torch.where(z0 > 0, -slope, slope)
        beta = torch.where(z0 > 0, slope * hi, -slope * lo)
        out.append((d0, alpha, beta))
    return out


def backward_remainder(program: Program, lin: Linearised, bounds: list, rho: float, *, chunk: int = 64,
                       outputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output coordinate j (all, or the indices `outputs`), (upper on R_j, upper on -R_j) for R = f(A(x + r)) -
    f(Ax) - J r, by the backward pass with the chord relaxation: e_j . delta <= a_j . r + c_j over the ball, so
    R_j <= rho ||a_j - J_j|| + c_j."""
    relax = _relaxations(lin.clean, bounds)
    total = lin.jacobian.shape[0]
    outputs = torch.arange(total) if outputs is None else outputs
    jac = lin.jacobian.to(program.base.device)
    up = torch.empty(outputs.numel(), dtype=torch.float64, device=jac.device)
    down = torch.empty_like(up)
    for where in torch.arange(outputs.numel()).split(chunk):
        part = outputs[where]
        k = part.numel()
        seed = torch.zeros(2 * k, total, dtype=torch.float64, device=jac.device)
        seed[torch.arange(k), part] = 1.0
        seed[torch.arange(k, 2 * k), part] = -1.0
        const = _Const(2 * k, seed)
        with torch.enable_grad():
            t = torch.zeros(2 * k, *program.base.shape[1:], dtype=program.base.dtype, device=program.base.device,
                            requires_grad=True)
            out = program.run(BackwardOps(lin.clean, relax, const), t)
            (grad,) = torch.autograd.grad(out, t, seed.view(2 * k, *out.shape[1:]))
        coef = program.coefficients(grad) if program.coefficients is not None else grad.flatten(1)
        sign = torch.cat([torch.ones(k), -torch.ones(k)]).to(coef)[:, None]
        linear = coef - sign * jac[torch.cat([part, part]).to(jac.device)]
        found = rho * torch.linalg.vector_norm(linear, dim=1) + const[0]
        up[where], down[where] = found[:k], found[k:]
    return up, down


class BacksubBound(NamedTuple):
    """bound >= max ||f(A(x + r)) - f(Ax)|| over ||r|| <= rho; spectral = rho ||J||_cert + ||R||, coordinate =
    ||rho ||J_j|| + |R_j| ||, R the bound on the remainder per output coordinate (forward: max(P, N); the backward
    pass's chord bound where it is smaller); unstable / units as in LocalBound; pushed: columns pushed; boxed:
    layers pushed as boxes (beyond the `columns` budget)."""

    bound: float
    spectral: float
    coordinate: float
    remainder: float
    unstable: int
    units: int
    pushed: int
    boxed: int


#: Bytes one batch of the pushes or of the backward pass may hold (the chunks are sized to it).
WORKING_BYTES = 2 ** 31


def _chunks(clean: CleanOps) -> tuple[int, int]:
    """(columns per push, objectives per backward pass) that keep a batch within WORKING_BYTES: a push holds a few
    activations at a time, the backward pass (autograd) about two per layer."""
    sizes = [z[0].numel() for z in clean.inputs] or [1]
    push = max(1, min(256, WORKING_BYTES // (8 * 4 * max(sizes))))
    back = max(1, min(64, WORKING_BYTES // (8 * 2 * 2 * sum(sizes))))
    return push, back


def backsub_bound(program: Program, lin: Linearised, rho: float, *, columns: int = 4096, chunk: int | None = None,
                  backward: bool = True, backward_chunk: int | None = None) -> BacksubBound:
    """The back-substituted bound at radius `rho` (module docstring); at most `columns` units in all are pushed
    one by one (`chunk` per pass), the layers beyond go as one box each; `backward`: also the backward pass with the chord
    relaxation for the output's remainder (2 x outputs objectives, `backward_chunk` per pass)."""
    clean = lin.clean
    count = len(clean.inputs)
    sized = _chunks(clean)
    chunk, backward_chunk = chunk or sized[0], backward_chunk or sized[1]
    pos = [torch.zeros_like(z[0]) for z in clean.inputs] + [torch.zeros_like(lin.output[0])]
    neg = [torch.zeros_like(p) for p in pos]
    margin = 1 + EVAL_MARGIN
    unstable = units = pushed = boxed = 0
    bounds = []
    zero = torch.zeros(1, *program.base.shape[1:], dtype=program.base.dtype, device=program.base.device)
    for k in range(count):
        z0 = clean.inputs[k]
        row = rho * lin.rows[k][None] * margin
        lo, hi = -row - neg[k][None] * margin, row + pos[k][None] * margin
        gamma = _gamma(clean.kinds[k], z0, lo, hi) * margin
        flips, total = _flips(clean.kinds[k], z0, lo, hi, gamma)
        unstable, units = unstable + flips, units + total
        bounds.append((lo, hi, gamma))
        where = torch.nonzero(gamma.flatten() > 0).squeeze(1)
        if where.numel() == 0:
            continue
        with torch.no_grad():
            if pushed + where.numel() > columns:
                boxed += 1
                half = (gamma / 2).expand(2, *gamma.shape[1:]).contiguous()
                _push(program, PushOps(clean, k, half, pos, neg, box=True), zero, count)
                continue
            pushed += where.numel()
            flat = gamma.flatten()
            for part in where.split(chunk):
                inject = torch.zeros(part.numel(), flat.numel(), dtype=gamma.dtype, device=gamma.device)
                inject[torch.arange(part.numel()), part] = flat[part]
                _push(program, PushOps(clean, k, inject.view(part.numel(), *gamma.shape[1:]), pos, neg, box=False),
                      zero, count)
    up, down = pos[count].flatten().double() * margin, neg[count].flatten().double() * margin
    reached = torch.nonzero(torch.maximum(up, down) > 0).squeeze(1)
    if backward and reached.numel():  # coordinates that no unit's deviation reaches have R_j = 0 already
        b_up, b_down = backward_remainder(program, lin, bounds, rho, chunk=backward_chunk, outputs=reached.cpu())
        reached = reached.to(up.device)
        up[reached] = torch.minimum(up[reached], b_up.to(up.device) * margin)
        down[reached] = torch.minimum(down[reached], b_down.to(up.device) * margin)
    extra = torch.maximum(up, down).clamp_min(0)
    remainder = float(torch.linalg.vector_norm(extra)) * margin
    spectral = rho * lin.norm + remainder
    rows = torch.linalg.vector_norm(lin.jacobian.double(), dim=1).to(extra.device) * margin
    coordinate = float(torch.linalg.vector_norm(rho * rows + extra)) * margin
    bound = min(spectral, coordinate) * (1 + 4 * 2.0 ** -53)
    return BacksubBound(bound, spectral, coordinate, remainder, unstable, units, pushed, boxed)


__all__ = ["BackwardOps", "BacksubBound", "PushOps", "backsub_bound", "backward_remainder"]
