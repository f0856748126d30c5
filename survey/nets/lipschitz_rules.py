"""Lipschitz rules of the zoo architectures and the exact networks (see survey.nets.lipschitz for the rules
of composition and what is certified)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from survey.nets.lipschitz import NORM_MARGIN, Inputs, operator_norm, rule, sequential_bound


def register_zoo_rules() -> None:
    """Register the rules of the zoo architectures and the exact networks in `RULES`."""
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
        matrix = net.matrix.detach().cpu().double()
        if inputs.certified:
            from survey.certify.spectral import dense_bound

            g = dense_bound(matrix)
        else:
            g = float(torch.linalg.matrix_norm(matrix, ord=2))
        inputs.layers["matrix G"] = g
        return g * inputs.h

    @rule(ConvolutionNet)
    def _convolution(net, inputs: Inputs, size: int) -> float:
        kernel = net.kernel.detach().cpu().double()
        if inputs.certified:  # the circular convolution with k on its own torus
            from survey.certify.conv import conv_bound

            n = kernel.shape[-1]
            k = conv_bound(torch.roll(torch.flip(kernel, (0, 1)), (1, 1), (0, 1)).view(1, 1, n, n), n,
                           padding=0, circular=True)
        else:
            k = float(torch.fft.fft2(kernel).abs().max())  # circular convolution, diagonal in the DFT basis
        inputs.layers["circular convolution"] = k
        return k * inputs.h

    @rule(TikhonovNet)
    def _tikhonov(net, inputs: Inputs, size: int) -> float:
        physics, mu = inputs.physics, net.mu
        image = (1, 1, size, size)
        # f(y) = (Re A*A + mu)^{-1} Re A* y: the whole linear map, its norm directly
        label = f"Tikhonov solve (mu={mu:g})"
        if inputs.domain == "image":
            return inputs.map_norm(label, lambda r: net(physics.A(r), physics), image)
        cdtype = torch.complex128 if physics.complex_measurements else torch.float64
        return inputs.map_norm(label, lambda e: net(e, physics), (1, *physics.measurement_shape), dtype=cdtype,
                               mask=physics.measured_mask().to(torch.float64))

    @rule(DnCNN)
    def _dncnn(net, inputs: Inputs, size: int) -> float:
        body, _ = sequential_bound(net.body, size, "body", inputs.layers, inputs.certified)
        return inputs.h * (1.0 + body)  # h - body(h)

    @rule(UNet)
    def _unet(net, inputs: Inputs, size: int) -> float:
        layers = inputs.layers
        sizes, level = [], []
        current = size
        for i, block in enumerate(net.down):
            if i > 0:
                pool, _ = sequential_bound(net.pool, current, "pool", layers, inputs.certified)
                current //= 2
            else:
                pool = 1.0
            b, current = sequential_bound(block, current, f"down[{i}]", layers, inputs.certified)
            level.append((level[-1] if level else 1.0) * pool * b)
            sizes.append(current)
        z = level[-1]
        for j, (up, merge) in enumerate(zip(net.up, net.merge)):
            skip = level[-2 - j]
            u, s = sequential_bound(up, sizes[-1 - j], f"up[{j}]", layers, inputs.certified)
            m, _ = sequential_bound(merge, s, f"merge[{j}]", layers, inputs.certified)
            z = m * math.hypot(u * z, skip)  # a concatenation: root of the sum of squares
        head, _ = sequential_bound(net.head, size, "head", layers, inputs.certified)
        # input: Re h, |h| (eps inside the root) or (Re h, Im h): each 1-Lipschitz in h
        return inputs.h * (1.0 + head * z)  # base + head(unet(features))

    @rule(Automap)
    def _automap(net, inputs: Inputs, size: int) -> float:
        # the sampled entries of y as reals: 1-Lipschitz in y (the measured entries)
        dense, _ = sequential_bound(net.dense, size, "dense", inputs.layers, inputs.certified)
        conv, _ = sequential_bound(net.conv, size, "conv", inputs.layers, inputs.certified)
        return inputs.data * dense * (1.0 + conv)  # z + conv(z)

    @rule(Cascade)
    def _cascade(net, inputs: Inputs, size: int) -> float:
        physics = inputs.physics
        image = (1, 1, size, size)
        projector = inputs.map_norm("DC: I - A*A", lambda x: x - physics.A_adjoint(physics.A(x)), image,
                                    dtype=torch.complex128)
        orthogonal = _reproduces(physics)
        inputs.layers["DC: A A* A = A (orthogonal ranges)"] = 1.0 if orthogonal else 0.0
        lip = inputs.adj  # x0 = A* y
        for i, cnn in enumerate(net.cnns):
            c, _ = sequential_bound(cnn, size, f"cnn[{i}]", inputs.layers, inputs.certified)  # complex <-> channels: isometries
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
            if inputs.certified:
                from survey.certify.conv import conv_bound

                k_norm = conv_bound(kernel, size, padding=pad)
            else:
                k_norm = operator_norm(lambda z: F.conv2d(z, kernel, padding=pad), (1, 2, size, size))
            slope = table_slope(step.act) * (1.0 + NORM_MARGIN)  # the float32 lookup rounds its slopes
            data = inputs.map_norm(f"steps[{t}] I - lam A*A", lambda x: x - lam * physics.A_adjoint(physics.A(x)),
                                   (1, 1, size, size), dtype=torch.complex128)
            inputs.layers[f"steps[{t}] filters K"] = k_norm
            inputs.layers[f"steps[{t}] activation slope"] = slope
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


