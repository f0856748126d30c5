"""Global upper bounds on a reconstruction network's Lipschitz constant, from layer norms along its graph.

The bound is on the map the spectrum task linearises (tasks/spectrum.py): r -> f(A(x + r)) in the image
domain, e -> f(Ax + P e) in the measurement domain (P: the measured entries), in the Euclidean norms
(complex tensors as pairs of reals). Its rules (seed 002, "Lipschitz constant of primary modules"):

- a linear layer: its operator norm. A convolution's from the top eigenvalue of the convolution after its
  transpose (the vjp of the convolution, i.e. conv_transpose2d with the same stride and padding) at the
  network's image size, bias dropped and a following eval-mode BatchNorm folded into its weight; a dense
  layer's exactly (largest singular value); the physics' A, A*A, H A, H P likewise from the
  operator and its adjoint (FFT layers and Cartesian data consistency are exactly orthogonal projections);
- composition multiplies, a residual sum adds, a concatenation of two branches gives sqrt(L1^2 + L2^2);
- ReLU, tanh, |z| (with eps inside the root), taking the real part, max-pool with non-overlapping windows,
  dropout in eval mode: 1; LeakyReLU(a): max(1, |a|); a piecewise-linear lookup table (MRI-VN's RBF
  activations as implemented here): its largest slope between knots, which is exact;
- data consistency x -> (I - A*A) x + A* y: ||I - A*A|| L_x + ||A* y-path||, or the root of the sum of
  squares when A A* A = A (then the two ranges are orthogonal: null(A) and range(A*)).

A layer without a rule (instance norm, an activation with no derivative bound, an unknown module) makes
the bound None with the reason, never a wrong number. `value` is certified: every norm is an upper bound in
exact arithmetic with its floating-point error added (survey.certify: a convolution's from its exact circular
spectrum on a torus large enough to hold its zero padding, a dense layer's and a small linear map's by Gram
iteration or a Cholesky certificate on its dense matrix); a linear map too large to write down here (more
than CERTIFY_LIMIT real inputs) falls back to its estimate and the bound says so (`certified` False,
`uncertified` naming the maps). `estimate` beside it is the same product with every norm from Lanczos
(ARPACK, residual below 1e-6 relative, raised by NORM_MARGIN): a numerical estimate, not a bound. Either
over-estimates the Lipschitz constant by the slack of the product rule. Architectures register a
`bound(module, inputs, size)` in `RULES` (`rule(cls)`), so the architectures stay as they are; a rule
registered by a user before first use is kept (the zoo's rules fill in the rest).
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import nn


#: Relative margin added to every computed norm: a Lanczos Ritz value approaches the norm from below, short by
#: far less than this once converged (float32 layers round at ~1e-7).
NORM_MARGIN = 1e-3


class LipschitzBound(NamedTuple):
    """value: the certified bound (None when some layer has none); domain: "image" or "measurement"; layers:
    name -> the certified norm used for it (None where none exists); missing: why there is no bound (empty
    when there is); estimate: the same product from Lanczos norms (an estimate); certified: whether every
    factor of `value` is certified; uncertified: the maps whose factor is only an estimate."""

    value: float | None
    domain: str
    layers: dict[str, float | None]
    missing: list[str]
    estimate: float | None = None
    certified: bool = False
    uncertified: tuple[str, ...] = ()


class _Unbounded(Exception):
    """A layer without a bound (the message says which and why)."""


@dataclass
class Inputs:
    """Norms of the maps by which the perturbation enters the network (image or measurement domain).

    h: ||Re H A|| (image) or ||H P|| (measurement): r -> the easy reconstruction; adj: ||A* A|| or ||A* P||:
    r -> A* y; data: ||A|| or 1: r -> y (the measured entries); physics: the operator (for DC layers).
    """

    physics: Any
    domain: str
    h: float
    adj: float
    data: float
    layers: dict[str, float | None] = field(default_factory=dict)
    certified: bool = True
    uncertified: list[str] = field(default_factory=list)
    #: certified norms by dense matrix (shape, sha256 of its bytes): a map equal to one bounded before, bit for
    #: bit (H = A* on Fourier sampling), reuses its bound
    bounded: dict = field(default_factory=dict, repr=False)

    def map_norm(self, label: str, apply: Callable, shape: tuple[int, ...], *, dtype: torch.dtype = torch.float64,
                 mask: torch.Tensor | None = None) -> float:
        """||apply|| (see `map_norm`), certified when this is the certified pass; records the label."""
        value = map_norm(apply, shape, dtype=dtype, mask=mask, certified=self.certified, bounded=self.bounded)
        if value is None:
            self.uncertified.append(label)
            value = operator_norm(apply, shape, dtype=dtype, mask=mask)
        self.layers[label] = value
        return value


# -- operator norms ---------------------------------------------------------------------------------

#: Maps with at most this many (real) input coordinates get their Gram matrix built column by column and
#: its top eigenvalue exactly; larger ones go to Lanczos.
DENSE_LIMIT = 64


def operator_norm(apply: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], *,
                  dtype: torch.dtype = torch.float64, iterations: int = 300, tol: float = 1e-6,
                  seed: int = 0, mask: torch.Tensor | None = None) -> float:
    """||L|| of a linear map `apply` on tensors of `shape` (real, or complex for a complex dtype, seen as
    pairs of reals), from the top eigenvalue of L^T L with L^T from autograd (the exact adjoint); `mask`
    restricts the input to its non-zeros (L P). Small maps: the dense Gram matrix, exactly. Larger ones:
    implicitly restarted Lanczos (ARPACK through scipy's `eigsh`: residual below `tol` relative, at most
    `iterations` restarts), whose Ritz value approaches the norm from below, within about `tol` of it even in
    a cluster of near-equal top values, where plain power iteration stalls short of it. Returns the norm
    times (1 + NORM_MARGIN)."""
    is_complex = dtype.is_complex
    real_dtype = torch.float32 if dtype in (torch.float32, torch.complex64) else torch.float64
    count = math.prod(shape) * (2 if is_complex else 1)
    keep = None
    if mask is not None:
        keep = torch.broadcast_to(mask != 0, shape)
        keep = (keep.unsqueeze(-1).expand(*shape, 2) if is_complex else keep).reshape(-1).numpy()  # (re, im) pairs

    def to_tensor(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).to(real_dtype)
        return torch.view_as_complex(t.view(*shape, 2)) if is_complex else t.view(shape)

    def gram(x: np.ndarray) -> np.ndarray:
        """L^T L x (real inner product), x a flat float64 vector."""
        x = np.ravel(x)
        if keep is not None:
            x = np.where(keep, x, 0.0)
        with torch.enable_grad():
            u = to_tensor(x).requires_grad_(True)
            out = apply(u)
            (g,) = torch.autograd.grad(out, u, out.detach())
        g = torch.view_as_real(g.detach()) if is_complex else g.detach()
        g = g.reshape(-1).double().numpy()
        return np.where(keep, g, 0.0) if keep is not None else g

    if count <= DENSE_LIMIT:
        matrix = np.stack([gram(column) for column in np.eye(count)], axis=1)
        top = float(np.linalg.eigvalsh((matrix + matrix.T) / 2)[-1])
    else:
        start = np.random.default_rng(seed).standard_normal(count)
        if keep is not None:
            start = np.where(keep, start, 0.0)
        operator = LinearOperator((count, count), matvec=gram, dtype=np.float64)
        # float32 maps carry ~1e-7 rounding: asking ARPACK for more than that would never converge
        accuracy = max(tol, 1e-5) if real_dtype == torch.float32 else tol
        try:
            (top,) = eigsh(operator, k=1, which="LA", v0=start, tol=accuracy, maxiter=iterations,
                           ncv=min(count - 1, 32), return_eigenvectors=False)
        except ArpackNoConvergence as error:
            raise RuntimeError(f"operator norm on {shape}: Lanczos did not converge in {iterations} "
                               "restarts") from error
    return math.sqrt(max(float(top), 0.0)) * (1.0 + NORM_MARGIN)


#: Linear maps with at most this many real inputs are written down densely and certified.
CERTIFY_LIMIT = 4096


def map_norm(apply: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], *,
             dtype: torch.dtype = torch.float64, mask: torch.Tensor | None = None,
             certified: bool = True, bounded: dict | None = None) -> float | None:
    """||L|| of a linear map: certified from its dense matrix (survey.certify.spectral.dense_bound) when
    `certified` and it has at most CERTIFY_LIMIT real inputs (None when it has more), else the Lanczos
    estimate `operator_norm`. `bounded`: certified norms by matrix (see `Inputs.bounded`), read and filled."""
    if not certified:
        return operator_norm(apply, shape, dtype=dtype, mask=mask)
    complex_ = dtype.is_complex
    count = int(mask.ne(0).sum()) * (2 if complex_ else 1) if mask is not None and mask.numel() == math.prod(shape) \
        else math.prod(shape) * (2 if complex_ else 1)
    if count > CERTIFY_LIMIT:
        return None
    from survey.certify.spectral import dense_bound, map_matrix

    matrix = map_matrix(lambda u: apply(u.to(dtype)), shape, complex_=complex_, mask=mask)
    key = (tuple(matrix.shape), hashlib.sha256(matrix.contiguous().numpy().tobytes()).hexdigest())
    if bounded is None or key not in bounded:
        value = dense_bound(matrix)
        if bounded is None:
            return value
        bounded[key] = value
    return bounded[key]


def _real(t: torch.Tensor) -> torch.Tensor:
    return t.real if torch.is_complex(t) else t


def on_cpu(physics):
    """`physics` itself when it is on the CPU, else a CPU copy (Module.to would move the caller's)."""
    device = next((b.device for b in physics.buffers()), torch.device("cpu"))
    return physics if device.type == "cpu" else copy.deepcopy(physics).to("cpu")


def physics_inputs(physics, domain: str, certified: bool = True) -> Inputs:
    """The input norms of `physics` for `domain` (see `Inputs`), in float64; certified ones when
    `certified` (where the map is small enough, see `map_norm`), else Lanczos estimates."""
    if domain not in ("image", "measurement"):
        raise ValueError(f"lipschitz: domain {domain!r} is not 'image' or 'measurement'")
    n = physics.size
    physics = on_cpu(physics)
    inputs = Inputs(physics, domain, 0.0, 0.0, 1.0, certified=certified)
    if domain == "image":
        image = (1, 1, n, n)
        h_of_a = lambda r: _real(physics.H(physics.A(r)))   # noqa: E731
        gram = lambda r: _real(physics.A_adjoint(physics.A(r)))   # noqa: E731 - A^T A, A as a real-linear map
        inputs.h = inputs.map_norm("input: H(A r)", h_of_a, image)
        inputs.adj = inputs.map_norm("input: A*(A r)", gram, image)   # H = A* (Fourier sampling): H's bound reused
        # ||A||^2 = ||A^T A|| (A_adjoint the exact adjoint: survey.testing.check_physics): the square root of a
        # bound on the Gram's norm bounds ||A|| (rounded up), which spares the dense bound of A itself
        inputs.data = inputs.layers["input: A r"] = math.nextafter(math.sqrt(inputs.adj), math.inf)
        if "input: A*(A r)" in inputs.uncertified:
            inputs.uncertified.append("input: A r")
    else:
        mshape = (1, *physics.measurement_shape)
        cdtype = torch.complex128 if physics.complex_measurements else torch.float64
        mask = physics.measured_mask().to(torch.float64)
        inputs.h = inputs.map_norm("input: H(P e)", lambda e: physics.H(e), mshape, dtype=cdtype, mask=mask)
        inputs.adj = inputs.map_norm("input: A*(P e)", lambda e: physics.A_adjoint(e), mshape, dtype=cdtype,
                                     mask=mask)
        inputs.layers["input: P e"] = 1.0
    return inputs


# -- layers ---------------------------------------------------------------------------------------


def _bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    """Per-channel factor of an eval-mode BatchNorm2d (its affine part's slope)."""
    if not bn.track_running_stats or bn.running_var is None:
        raise _Unbounded(f"{type(bn).__name__} without running statistics (batch-dependent in eval mode)")
    scale = 1.0 / torch.sqrt(bn.running_var.detach().cpu().double() + bn.eps)
    return scale * bn.weight.detach().cpu().double() if bn.affine else scale


def conv_norm(conv: nn.Module, size: int, scale: torch.Tensor | None = None, certified: bool = False) -> float:
    """Operator norm of a Conv2d / ConvTranspose2d (bias dropped, output channels scaled by `scale`) on
    (1, C_in, size, size) inputs: certified (survey.certify.conv.module_bound) when `certified`, else the
    Lanczos estimate from it and its transpose (`operator_norm`)."""
    if certified:
        from survey.certify.conv import module_bound

        try:
            return module_bound(conv, size, scale)
        except ValueError as err:
            raise _Unbounded(str(err)) from err
    weight = conv.weight.detach().cpu().float()  # float32: twice as fast, and NORM_MARGIN covers its rounding
    transposed = isinstance(conv, nn.ConvTranspose2d)
    if scale is not None:
        scale = scale.float()
        weight = weight * (scale.view(1, -1, 1, 1) if transposed else scale.view(-1, 1, 1, 1))
    if conv.padding_mode != "zeros":
        raise _Unbounded(f"{type(conv).__name__} with padding_mode={conv.padding_mode!r} has no rule here")
    channels = weight.shape[0] if transposed else weight.shape[1] * conv.groups
    if transposed:
        def apply(u):
            return F.conv_transpose2d(u, weight, None, conv.stride, conv.padding, conv.output_padding, conv.groups,
                                      conv.dilation)
    else:
        def apply(u):
            return F.conv2d(u, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return operator_norm(apply, (1, channels, size, size), dtype=torch.float32)


_ONE = (nn.ReLU, nn.Tanh, nn.Dropout, nn.Identity, nn.Sigmoid)


def _activation(module: nn.Module) -> float:
    if isinstance(module, (nn.ReLU, nn.Tanh, nn.Dropout, nn.Identity)):
        return 1.0
    if isinstance(module, nn.Sigmoid):
        return 0.25
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(module.negative_slope))
    if isinstance(module, nn.MaxPool2d):
        k = _pair(module.kernel_size)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        if _pair(module.dilation) != (1, 1):
            raise _Unbounded("dilated MaxPool2d has no rule here")
        # each input lies in at most ceil(k/s) windows per axis: ||.||_2 grows by at most the root of their number
        return math.sqrt(math.ceil(k[0] / s[0]) * math.ceil(k[1] / s[1]))
    raise _Unbounded(f"no Lipschitz rule for {type(module).__name__}")


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def sequential_bound(seq: nn.Module, size: int, name: str, layers: dict[str, float | None],
                     certified: bool = False) -> tuple[float, int]:
    """Product of the layer norms of an nn.Sequential (or one module) at image size `size`, a BatchNorm2d
    folded into the convolution before it; returns (bound, image size at the output). Records each norm.
    `certified`: certified layer norms (else Lanczos estimates)."""
    modules = list(seq) if isinstance(seq, nn.Sequential) else [seq]
    total, i = 1.0, 0
    while i < len(modules):
        m = modules[i]
        label = f"{name}[{i}] {type(m).__name__}"
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            scale = None
            if i + 1 < len(modules) and isinstance(modules[i + 1], nn.BatchNorm2d):
                scale = _bn_scale(modules[i + 1])
                label += "+BatchNorm2d"
                i += 1
            value = conv_norm(m, size, scale, certified)
            size = _out_size(m, size)
        elif isinstance(m, nn.BatchNorm2d):
            value = float(_bn_scale(m).abs().max())
        elif isinstance(m, nn.Linear):
            weight = m.weight.detach().cpu().double()
            if certified:
                from survey.certify.spectral import dense_bound

                value = dense_bound(weight)
            else:
                value = float(torch.linalg.matrix_norm(weight, ord=2))
        elif isinstance(m, nn.Sequential):
            value, size = sequential_bound(m, size, f"{name}[{i}]", layers, certified)
        elif isinstance(m, (nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)):
            layers[label] = None
            raise _Unbounded(f"{label}: a normalisation by the input's own statistics has no global bound")
        else:
            try:
                value = _activation(m)
                if isinstance(m, nn.MaxPool2d):
                    size = size // _pair(m.stride if m.stride is not None else m.kernel_size)[0]
            except _Unbounded:
                layers[label] = None
                raise
        layers[label] = value
        total *= value
        i += 1
    return total, size


def _out_size(conv: nn.Module, size: int) -> int:
    k, s, p, d = (_pair(conv.kernel_size)[0], _pair(conv.stride)[0], _pair(conv.padding)[0],
                  _pair(conv.dilation)[0])
    if isinstance(conv, nn.ConvTranspose2d):
        return (size - 1) * s - 2 * p + d * (k - 1) + _pair(conv.output_padding)[0] + 1
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# -- architectures --------------------------------------------------------------------------------

#: Architecture class -> bound(module, inputs, size) -> float (raises _Unbounded where there is none).
RULES: dict[type, Callable[[nn.Module, Inputs, int], float]] = {}


def rule(cls: type) -> Callable:
    def decorate(fn):
        RULES[cls] = fn
        return fn
    return decorate


_ZOO_REGISTERED = False


def _register_zoo() -> None:
    """Add the zoo's rules, once, keeping any rule a user registered first for the same class."""
    global _ZOO_REGISTERED
    if _ZOO_REGISTERED:
        return
    _ZOO_REGISTERED = True
    from survey.nets.lipschitz_rules import register_zoo_rules

    user = dict(RULES)
    register_zoo_rules()
    RULES.update(user)


def lipschitz_bound(net: nn.Module, physics, *, domain: str = "image", size: int | None = None,
                    estimate: bool = False) -> LipschitzBound:
    """Upper bound on the Lipschitz constant of r -> f(A r) (domain "image") or e -> f(P e) ("measurement")
    for the network `net` on `physics`, at image size `size` (default physics.size): None with the reason
    where some layer has no bound (see the module docstring); `estimate`: also the Lanczos product beside
    it. Parameters are read in float64 on the CPU."""
    _register_zoo()
    size = int(size if size is not None else physics.size)
    target = net   # unwrap wrappers without a rule (a byo wrapper's .module, the engine's finite guard's .net)
    while not any(c in RULES for c in type(target).__mro__):
        inner = getattr(target, "module", None) or getattr(target, "net", None)
        if not isinstance(inner, nn.Module):
            break
        target = inner
    cls = next((c for c in type(target).__mro__ if c in RULES), None)
    if cls is None:
        return LipschitzBound(None, domain, {}, [f"no Lipschitz rule for {type(net).__name__} (register one with "
                                                 "survey.nets.lipschitz.rule)"])
    results = []
    for certified in ((True, False) if estimate else (True,)):
        inputs = physics_inputs(physics, domain, certified)
        inputs.physics = on_cpu(physics)
        try:
            with torch.no_grad():
                value = float(RULES[cls](target, inputs, size))
        except _Unbounded as err:
            return LipschitzBound(None, domain, inputs.layers, [str(err)])
        results.append((value, inputs))
    value, inputs = results[0]
    return LipschitzBound(value, domain, inputs.layers, [], results[1][0] if estimate else None,
                          not inputs.uncertified, tuple(inputs.uncertified))


__all__ = ["CERTIFY_LIMIT", "Inputs", "LipschitzBound", "map_norm", "RULES", "conv_norm", "lipschitz_bound", "operator_norm", "physics_inputs",
           "rule", "sequential_bound", "table_slope"]


def __getattr__(name: str):
    if name in ("table_slope",):
        from survey.nets import lipschitz_rules

        return getattr(lipschitz_rules, name)
    raise AttributeError(name)
