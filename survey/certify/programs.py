"""Networks written in the operations of survey.certify.propagate, per architecture, and the per-image
driver `certify_local`.

A program takes the perturbation u (an image in the image domain; a measurement-shaped tensor on the
measured entries in the measurement domain) and starts with the network's own input map (Re H(A u),
(Re, Im) of H(A u), ...), linear in u. Registered: the exact linear networks (IdentityNet, TikhonovNet,
MatrixNet, ConvolutionNet: the whole map is linear), DnCNN and the U-Net (all three input modes); a user
adds one with `program(cls)`. Layers with a rule: SUPPORTED_LAYERS.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from survey.certify.propagate import LocalBound, Linearised, Ops, Program, Unsupported, linearise, local_bound

#: What a network may contain to get a certificate (shown by the bracket task's docs).
SUPPORTED_LAYERS = (
    "Conv2d (zero or circular padding, any stride, dilation, groups)", "ConvTranspose2d", "Linear",
    "BatchNorm2d (eval mode, running statistics)", "AvgPool2d (counting its zero padding)",
    "Upsample (nearest, bilinear)", "ReLU", "LeakyReLU (slope <= 1)", "MaxPool2d (2 x 2, stride 2)",
    "Identity / Dropout (eval)", "residual sums and differences", "channel concatenation",
    "real part, (real, imaginary) channels and |z| of the easy reconstruction H(y)",
    "any linear network as a whole (IdentityNet, TikhonovNet, MatrixNet, ConvolutionNet)",
)

#: Architecture class -> builder(net, physics, domain) -> run(ops, u).
PROGRAMS: dict[type, Callable] = {}


def program(cls: type) -> Callable:
    """Register a program builder for architecture `cls`: builder(net, physics, domain) -> run(ops, u)."""
    def decorate(fn):
        PROGRAMS[cls] = fn
        return fn
    return decorate


def _channels(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z.real, z.imag], 1) if torch.is_complex(z) else z


def measurement(physics, domain: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """u -> the data y the network reads (A u in the image domain, u itself in the measurement domain)."""
    return physics.A if domain == "image" else (lambda u: u)


def easy_channels(ops: Ops, u, physics, domain: str):
    """(Re, Im) channels of H(y(u)) (one channel when H is real): the input map of most zoo networks."""
    data = measurement(physics, domain)
    return ops.linear_map(lambda v: _channels(physics.H(data(v))), u)


_REGISTERED = False


def _register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from survey.nets.dncnn import DnCNN
    from survey.nets.exact import ConvolutionNet, IdentityNet, MatrixNet, TikhonovNet
    from survey.nets.unet import UNet

    user = dict(PROGRAMS)

    def linear_network(net, physics, domain):
        data = measurement(physics, domain)
        return lambda ops, u: ops.linear_map(lambda v: net(data(v), physics), u)

    for cls in (IdentityNet, TikhonovNet, MatrixNet, ConvolutionNet):
        PROGRAMS[cls] = linear_network

    @program(DnCNN)
    def _dncnn(net, physics, domain):
        def run(ops, u):
            h = ops.take(easy_channels(ops, u, physics, domain), slice(0, 1))
            return ops.sub(h, ops.sequential(net.body, h, "body"))
        return run

    @program(UNet)
    def _unet(net, physics, domain):
        def run(ops, u):
            h = easy_channels(ops, u, physics, domain)
            two = _complex_input(physics)
            if net.input_mode == "real" or (net.input_mode == "magnitude" and not two):
                features = base = ops.take(h, slice(0, 1))
            elif net.input_mode == "magnitude":
                features = base = ops.magnitude(h, 1e-8)
            else:
                features, base = (h if two else ops.cat([h, ops.linear_map(torch.zeros_like, h)])), ops.take(h, slice(0, 1))
            z, skips = features, []
            for i, block in enumerate(net.down):
                z = ops.sequential(block, z if i == 0 else ops.sequential(net.pool, z, "pool"), f"down[{i}]")
                skips.append(z)
            for j, (up, merge, skip) in enumerate(zip(net.up, net.merge, reversed(skips[:-1]))):
                z = ops.sequential(merge, ops.cat([ops.sequential(up, z, f"up[{j}]"), skip]), f"merge[{j}]")
            return ops.add(base, ops.sequential(net.head, z, "head"))
        return run

    PROGRAMS.update(user)


def _complex_input(physics) -> bool:
    device = next((b.device for b in physics.buffers()), torch.device("cpu"))
    with torch.no_grad():
        probe = physics.H(physics.A(torch.zeros(1, 1, physics.size, physics.size, dtype=torch.float64,
                                                device=device)))
    return torch.is_complex(probe)


def builder_for(net) -> Callable:
    """The program builder of `net`'s class (or a base class); Unsupported naming the class otherwise."""
    _register()
    cls = next((c for c in type(net).__mro__ if c in PROGRAMS), None)
    if cls is None:
        raise Unsupported(f"no bound rule for {type(net).__name__} (supported: "
                          f"{', '.join(sorted(c.__name__ for c in PROGRAMS))}; register one with "
                          "survey.certify.programs.program)")
    return PROGRAMS[cls]


class ImageCertificate(NamedTuple):
    """One image: the linearisation (clean output, dense J, ||J||_cert) and the bound per radius."""

    lin: Linearised
    bounds: list[LocalBound]


def basis_for(physics, domain: str, like: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """(indices -> unit perturbations, how many): unit images in the image domain; unit real and imaginary
    parts of the measured entries in the measurement domain."""
    if domain == "image":
        shape = like.shape[1:]
        count = int(torch.tensor(shape).prod())

        def unit_images(index):
            out = torch.zeros(index.numel(), count, dtype=torch.float64)
            out[torch.arange(index.numel()), index] = 1.0
            return out.view(index.numel(), *shape)
        return unit_images, count
    mask = physics.measured_mask().to(torch.float64)
    y = physics.A(like).cpu()
    full = torch.broadcast_to(mask.cpu() != 0, y.shape).reshape(-1)
    positions = torch.nonzero(full).squeeze(1)
    complex_ = torch.is_complex(y)
    count = positions.numel() * (2 if complex_ else 1)

    def unit_entries(index):
        out = torch.zeros(index.numel(), full.numel(), dtype=y.dtype)
        pos = positions[index // 2] if complex_ else positions[index]
        value = torch.where(index % 2 == 0, 1.0 + 0j, 1j).to(y.dtype) if complex_ else torch.ones(index.numel(), dtype=y.dtype)
        out[torch.arange(index.numel()), pos] = value
        return out.view(index.numel(), *y.shape[1:])
    return unit_entries, count


def coefficients_for(physics, domain: str, like: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gradients w.r.t. the perturbation (B, *shape) -> coefficients on basis_for's basis (B, count): the flat
    image; the measured entries' (real, imaginary) parts in the measurement domain."""
    if domain == "image":
        return lambda g: g.flatten(1)
    mask = physics.measured_mask()
    y = physics.A(like)
    full = torch.broadcast_to(mask != 0, y.shape).reshape(-1)
    positions = torch.nonzero(full).squeeze(1)

    def pick(g):
        g = g.flatten(1)[:, positions.to(g.device)]
        return torch.view_as_real(g).flatten(1) if torch.is_complex(g) else g
    return pick


def certify_local(net, physics, x: torch.Tensor, radii: Sequence[float], *, domain: str = "image",
                  chunk: int = 128, columns: int = 4096, backward: bool = True) -> ImageCertificate:
    """Certified bounds on max ||f(y(x) + y(r)) - f(y(x))|| over ||r|| <= rho for each rho in `radii`, at one
    image x (1, 1, n, n); the network and physics are read in float64 (copies, on the network's device; the
    certificate of the dense Jacobian runs on the CPU). Unsupported names the first layer without a rule."""
    import copy

    build = builder_for(net)
    device = next((t.device for t in (*getattr(net, "parameters", lambda: [])(), x)), x.device)
    net64 = copy.deepcopy(net).to(device, torch.float64).eval() if isinstance(net, torch.nn.Module) else net
    phys64 = copy.deepcopy(physics).to(device)
    x64 = x.detach().to(device, torch.float64)
    run = build(net64, phys64, domain)
    base = x64 if domain == "image" else phys64.A(x64)
    units, count = basis_for(phys64, domain, x64)
    prog = Program(run, lambda u: u, base, coefficients_for(phys64, domain, x64))

    def basis(index):
        return units(index).to(device)
    lin = linearise(prog, basis, count, chunk=chunk)
    return ImageCertificate(lin, [local_bound(prog, lin, float(r), columns=columns, backward=backward)
                                  for r in radii])


__all__ = ["ImageCertificate", "PROGRAMS", "SUPPORTED_LAYERS", "basis_for", "builder_for", "certify_local",
           "coefficients_for", "easy_channels", "measurement", "program"]
