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
the bound None with the reason, never a wrong number. Each norm is the top eigenvalue of L^T L: exact
from the dense Gram matrix for small maps, else by Lanczos (ARPACK, residual below 1e-6 relative), whose
Ritz value approaches it from below; it is then raised by NORM_MARGIN (0.1%), so that a linear network's
bound stays above its sigma_1 (plain power iteration stalled short of it when the top two singular values
were close); the composed bound over-estimates the Lipschitz constant by the slack of the product rule,
which dwarfs that. Architectures register a
`bound(module, inputs, size)` in `RULES` (`rule(cls)`), so the architectures stay as they are.
"""

from __future__ import annotations

import copy
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
    """value: the bound (None when some layer has none); domain: "image" or "measurement"; layers: name ->
    the norm used for it (None where none exists); missing: why there is no bound (empty when there is)."""

    value: float | None
    domain: str
    layers: dict[str, float | None]
    missing: list[str]


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


def _real(t: torch.Tensor) -> torch.Tensor:
    return t.real if torch.is_complex(t) else t


def on_cpu(physics):
    """`physics` itself when it is on the CPU, else a CPU copy (Module.to would move the caller's)."""
    device = next((b.device for b in physics.buffers()), torch.device("cpu"))
    return physics if device.type == "cpu" else copy.deepcopy(physics).to("cpu")


def physics_inputs(physics, domain: str) -> Inputs:
    """The input norms of `physics` for `domain` (see `Inputs`), in float64."""
    n = physics.size
    physics = on_cpu(physics)
    image = (1, 1, n, n)
    if domain == "image":
        h = operator_norm(lambda r: _real(physics.H(physics.A(r))), image)
        adj = operator_norm(lambda r: _real(physics.A_adjoint(physics.A(r))), image)
        data = operator_norm(lambda r: physics.A(r), image)
    elif domain == "measurement":
        mshape = (1, *physics.measurement_shape)
        cdtype = torch.complex128 if physics.complex_measurements else torch.float64
        mask = physics.measured_mask().to(torch.float64)
        h = operator_norm(lambda e: physics.H(e), mshape, dtype=cdtype, mask=mask)
        adj = operator_norm(lambda e: physics.A_adjoint(e), mshape, dtype=cdtype, mask=mask)
        data = 1.0
    else:
        raise ValueError(f"lipschitz: domain {domain!r} is not 'image' or 'measurement'")
    inputs = Inputs(physics, domain, h, adj, data)
    inputs.layers.update({"input: H(A r)" if domain == "image" else "input: H(P e)": h,
                          "input: A*(A r)" if domain == "image" else "input: A*(P e)": adj,
                          "input: A r" if domain == "image" else "input: P e": data})
    return inputs


# -- layers ---------------------------------------------------------------------------------------


def _bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    """Per-channel factor of an eval-mode BatchNorm2d (its affine part's slope)."""
    if not bn.track_running_stats or bn.running_var is None:
        raise _Unbounded(f"{type(bn).__name__} without running statistics (batch-dependent in eval mode)")
    scale = 1.0 / torch.sqrt(bn.running_var.detach().cpu().double() + bn.eps)
    return scale * bn.weight.detach().cpu().double() if bn.affine else scale


def conv_norm(conv: nn.Module, size: int, scale: torch.Tensor | None = None) -> float:
    """Operator norm of a Conv2d / ConvTranspose2d (bias dropped, output channels scaled by `scale`) on
    (1, C_in, size, size) inputs, from it and its transpose (`operator_norm`)."""
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


def sequential_bound(seq: nn.Module, size: int, name: str, layers: dict[str, float | None]) -> tuple[float, int]:
    """Product of the layer norms of an nn.Sequential (or one module) at image size `size`, a BatchNorm2d
    folded into the convolution before it; returns (bound, image size at the output). Records each norm."""
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
            value = conv_norm(m, size, scale)
            size = _out_size(m, size)
        elif isinstance(m, nn.BatchNorm2d):
            value = float(_bn_scale(m).abs().max())
        elif isinstance(m, nn.Linear):
            value = float(torch.linalg.matrix_norm(m.weight.detach().cpu().double(), ord=2))
        elif isinstance(m, nn.Sequential):
            value, size = sequential_bound(m, size, f"{name}[{i}]", layers)
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


def _register_zoo() -> None:
    from survey.nets.automap import Automap
    from survey.nets.cascade import Cascade
    from survey.nets.dncnn import DnCNN
    from survey.nets.exact import ConvolutionNet, IdentityNet, MatrixNet, TikhonovNet
    from survey.nets.unet import UNet
    from survey.nets.varnet import VarNet

    @rule(IdentityNet)
    def _identity(net, inputs: Inputs, size: int) -> float:
        return inputs.h

    @rule(MatrixNet)
    def _matrix(net, inputs: Inputs, size: int) -> float:
        g = float(torch.linalg.matrix_norm(net.matrix.detach().cpu().double(), ord=2))
        inputs.layers["matrix G"] = g
        return g * inputs.h

    @rule(ConvolutionNet)
    def _convolution(net, inputs: Inputs, size: int) -> float:
        k = float(torch.fft.fft2(net.kernel.detach().cpu().double()).abs().max())  # exact: circular convolution, diagonal in the DFT basis
        inputs.layers["circular convolution"] = k
        return k * inputs.h

    @rule(TikhonovNet)
    def _tikhonov(net, inputs: Inputs, size: int) -> float:
        physics, mu = inputs.physics, net.mu
        image = (1, 1, size, size)
        # f(y) = (Re A*A + mu)^{-1} Re A* y: the whole linear map, its norm directly
        if inputs.domain == "image":
            value = operator_norm(lambda r: net(physics.A(r), physics), image)
        else:
            cdtype = torch.complex128 if physics.complex_measurements else torch.float64
            value = operator_norm(lambda e: net(e, physics), (1, *physics.measurement_shape), dtype=cdtype,
                                  mask=physics.measured_mask().to(torch.float64))
        inputs.layers[f"Tikhonov solve (mu={mu:g})"] = value
        return value

    @rule(DnCNN)
    def _dncnn(net, inputs: Inputs, size: int) -> float:
        body, _ = sequential_bound(net.body, size, "body", inputs.layers)
        return inputs.h * (1.0 + body)  # h - body(h)

    @rule(UNet)
    def _unet(net, inputs: Inputs, size: int) -> float:
        layers = inputs.layers
        sizes, level = [], []
        current = size
        for i, block in enumerate(net.down):
            if i > 0:
                pool, _ = sequential_bound(net.pool, current, "pool", layers)
                current //= 2
            else:
                pool = 1.0
            b, current = sequential_bound(block, current, f"down[{i}]", layers)
            level.append((level[-1] if level else 1.0) * pool * b)
            sizes.append(current)
        z = level[-1]
        for j, (up, merge) in enumerate(zip(net.up, net.merge)):
            skip = level[-2 - j]
            u, s = sequential_bound(up, sizes[-1 - j], f"up[{j}]", layers)
            m, _ = sequential_bound(merge, s, f"merge[{j}]", layers)
            z = m * math.hypot(u * z, skip)  # a concatenation: root of the sum of squares
        head, _ = sequential_bound(net.head, size, "head", layers)
        # input: Re h, |h| (eps inside the root) or (Re h, Im h): each 1-Lipschitz in h
        return inputs.h * (1.0 + head * z)  # base + head(unet(features))

    @rule(Automap)
    def _automap(net, inputs: Inputs, size: int) -> float:
        # the sampled entries of y as reals: 1-Lipschitz in y (the measured entries)
        dense, _ = sequential_bound(net.dense, size, "dense", inputs.layers)
        conv, _ = sequential_bound(net.conv, size, "conv", inputs.layers)
        return inputs.data * dense * (1.0 + conv)  # z + conv(z)

    @rule(Cascade)
    def _cascade(net, inputs: Inputs, size: int) -> float:
        physics = inputs.physics
        image = (1, 1, size, size)
        projector = operator_norm(lambda x: x - physics.A_adjoint(physics.A(x)), image, dtype=torch.complex128)
        orthogonal = _reproduces(physics)
        inputs.layers["DC: I - A*A"] = projector
        inputs.layers["DC: A A* A = A (orthogonal ranges)"] = 1.0 if orthogonal else 0.0
        lip = inputs.adj  # x0 = A* y
        for i, cnn in enumerate(net.cnns):
            c, _ = sequential_bound(cnn, size, f"cnn[{i}]", inputs.layers)  # complex <-> channels: isometries
            u = (1.0 + c) * lip
            lip = math.hypot(projector * u, inputs.adj) if orthogonal else projector * u + inputs.adj
        return lip  # real part: 1

    @rule(VarNet)
    def _varnet(net, inputs: Inputs, size: int) -> float:
        physics = inputs.physics
        lip = inputs.adj  # x0 = A* y
        for t, step in enumerate(net.steps):
            lam = float(step.lam.detach())
            kernel = (step.kernel - step.kernel.mean(dim=(1, 2, 3), keepdim=True)).detach().cpu().double()
            pad = kernel.shape[-1] // 2
            k_norm = operator_norm(lambda z: F.conv2d(z, kernel, padding=pad), (1, 2, size, size))
            slope = table_slope(step.act) * (1.0 + NORM_MARGIN)  # the float32 lookup rounds its slopes
            data = operator_norm(lambda x: x - lam * physics.A_adjoint(physics.A(x)), (1, 1, size, size),
                                 dtype=torch.complex128)
            inputs.layers[f"steps[{t}] filters K"] = k_norm
            inputs.layers[f"steps[{t}] activation slope"] = slope
            inputs.layers[f"steps[{t}] I - lam A*A"] = data
            # x - K^T phi(K x) - lam A*(A x - y): triangle inequality over the three terms
            lip = (data + k_norm * k_norm * slope) * lip + abs(lam) * inputs.adj
        return lip


def table_slope(act: nn.Module) -> float:
    """Largest |slope| of a piecewise-linear lookup-table activation (RBFActivation: the curve sampled at
    its knots, linearly interpolated, constant beyond): exact Lipschitz constant of the implemented map."""
    values = act.curves().detach().cpu().double()
    step = float(act.knots[1] - act.knots[0])
    return float((values[:, 1:] - values[:, :-1]).abs().max()) / step


def _reproduces(physics, trials: int = 2) -> bool:
    """True when A A* A = A numerically (then range(I - A*A) = null(A) is orthogonal to range(A*))."""
    gen = torch.Generator().manual_seed(1)
    n = physics.size
    for _ in range(trials):
        x = torch.randn((1, 1, n, n), generator=gen, dtype=torch.complex128)
        ax = physics.A(x)
        again = physics.A(physics.A_adjoint(ax))
        if float(torch.linalg.vector_norm(again - ax)) > 1e-9 * float(torch.linalg.vector_norm(ax)):
            return False
    return True


def lipschitz_bound(net: nn.Module, physics, *, domain: str = "image", size: int | None = None) -> LipschitzBound:
    """Upper bound on the Lipschitz constant of r -> f(A r) (domain "image") or e -> f(P e) ("measurement")
    for the network `net` on `physics`, at image size `size` (default physics.size): None with the reason
    where some layer has no bound (see the module docstring). Parameters are read in float64 on the CPU."""
    if not RULES:
        _register_zoo()
    size = int(size if size is not None else physics.size)
    target = getattr(net, "module", None) if type(net) not in RULES and hasattr(net, "module") else net
    cls = next((c for c in type(target).__mro__ if c in RULES), None)
    if cls is None:
        return LipschitzBound(None, domain, {}, [f"no Lipschitz rule for {type(net).__name__} (register one with "
                                                 "survey.nets.lipschitz.rule)"])
    inputs = physics_inputs(physics, domain)
    inputs.physics = on_cpu(physics)
    try:
        with torch.no_grad():
            value = RULES[cls](target, inputs, size)
    except _Unbounded as err:
        return LipschitzBound(None, domain, inputs.layers, [str(err)])
    return LipschitzBound(float(value), domain, inputs.layers, [])


class ZooGap(NamedTuple):
    """The bound of a zoo network beside the largest local sigma_1 seen over `image_ids`: gap = bound / sigma."""

    name: str
    bound: LipschitzBound
    sigma: list[float]
    image_ids: list[str]

    @property
    def gap(self) -> float | None:
        return None if self.bound.value is None or not self.sigma else self.bound.value / max(self.sigma)


def zoo_gap(name: str, *, count: int = 2, domain: str = "image", dataset: str | None = None,
            split: str = "test") -> ZooGap:
    """Global bound of zoo network `name` and sigma_1 of its local Jacobian (tasks/spectrum.py) at `count`
    images of its dataset (default: the one it was trained on)."""
    from survey.data import load_dataset
    from survey.nets.zoo import entry, load_network
    from survey.tasks.spectrum import top_singular

    net, physics = load_network(name)
    bound = lipschitz_bound(net, physics, domain=domain)
    sigma, ids = [], []
    if count > 0:
        data = load_dataset(dataset or entry(name).dataset, split=split, size=physics.size, count=count)
        found = top_singular(net, physics, data.images, 1, domain=domain, tol=1e-4,
                             generator=torch.Generator().manual_seed(0))
        sigma, ids = found.sigma[:, 0].tolist(), list(data.ids)
    return ZooGap(name, bound, sigma, ids)


__all__ = ["Inputs", "ZooGap", "zoo_gap", "LipschitzBound", "RULES", "conv_norm", "lipschitz_bound", "operator_norm", "physics_inputs",
           "rule", "sequential_bound", "table_slope"]
