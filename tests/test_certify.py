"""Certified norms and local bounds (survey.certify): against exact dense norms, exact linear networks, and the
exact maxima of small ReLU networks found by enumerating their activation patterns (tests/certify_exact.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from certify_exact import TinyMLP, disk_maximum, mlp, segment_maximum
from survey.certify.conv import module_bound
from survey.certify.programs import certify_local, program
from survey.certify.propagate import Unsupported
from survey.certify.spectral import cholesky_bound, dense_bound, gram_bound
from survey.nets.dncnn import DnCNN
from survey.nets.exact import ConvolutionNet, IdentityNet, MatrixNet
from survey.physics import make_physics


@program(TinyMLP)
def _tiny(net, physics, domain):
    return lambda ops, u: ops.sequential(net.seq, ops.linear_map(lambda v: v.flatten(1)[:, :net.dim], u))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_spectrum(values, m: int, n: int, seed: int) -> torch.Tensor:
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=gen(seed), dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=gen(seed + 1), dtype=torch.float64))
    s = torch.zeros(m, n, dtype=torch.float64)
    k = min(m, n, len(values))
    s[range(k), range(k)] = torch.tensor(values[:k], dtype=torch.float64)
    return u @ s @ v.T


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(7, 5), (30, 40), (90, 70)])
def test_dense_bounds_are_above_the_exact_norm_and_tight(shape, seed):
    w = torch.randn(*shape, generator=gen(seed), dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(w, ord=2))
    for bound in (float(gram_bound(w)), cholesky_bound(w), dense_bound(w)):
        assert exact <= bound <= exact * (1 + 1e-6), (bound, exact)


@pytest.mark.parametrize("gap", [1e-3, 1e-6, 1e-9, 0.0])
def test_close_and_equal_top_singular_values_stay_bounded(gap):
    # the case where power iteration and plain Lanczos stop short of the norm
    w = with_spectrum([1.0, 1.0 - gap, 0.5, 0.2], 40, 30, seed=3)
    exact = float(torch.linalg.matrix_norm(w, ord=2))
    assert exact <= float(gram_bound(w)) <= exact * (1 + 1e-6)
    assert exact <= cholesky_bound(w) <= exact * (1 + 1e-6)
    assert 1.0 <= float(gram_bound(torch.eye(128, dtype=torch.float64))) <= 1 + 1e-6  # 128 equal values


def test_batched_complex_blocks_each_get_their_own_bound():
    blocks = torch.randn(50, 6, 9, generator=gen(4), dtype=torch.complex128)
    exact = torch.linalg.matrix_norm(blocks, ord=2)
    found = gram_bound(blocks)
    assert bool((found >= exact).all()) and bool((found <= exact * (1 + 1e-6)).all())
    assert float(gram_bound(blocks, only_max=True).max()) >= float(exact.max())


def dense_norm(fn, shape) -> float:
    numel = math.prod(shape)
    jac = torch.autograd.functional.jacobian(lambda u: fn(u.view(shape)).reshape(-1),
                                             torch.zeros(numel, dtype=torch.float64))
    return float(torch.linalg.matrix_norm(jac, ord=2))


CONVS = {
    "3x3": lambda: nn.Conv2d(2, 3, 3, padding=1),
    "5x5-stride-2": lambda: nn.Conv2d(3, 2, 5, padding=2, stride=2),
    "stride-3-no-padding": lambda: nn.Conv2d(2, 2, 4, stride=3),
    "dilated-grouped": lambda: nn.Conv2d(2, 4, 3, padding=2, dilation=2, groups=2),
    "transposed-2x2": lambda: nn.ConvTranspose2d(3, 2, 2, stride=2),
    "transposed-4x4-padded": lambda: nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1),
}


@pytest.mark.parametrize("seed", [0, 1, 54])
@pytest.mark.parametrize("kind", CONVS)
def test_convolution_bounds_are_above_the_dense_matrix_norm(kind, seed):
    torch.manual_seed(seed)
    conv = CONVS[kind]().double()
    size = 8
    exact = dense_norm(lambda u: conv(u) - conv(torch.zeros_like(u)), (1, conv.in_channels, size, size))
    bound = module_bound(conv, size)
    assert exact <= bound, (kind, exact, bound)
    # the torus that holds the zero padding is larger than the image: looser at 8 x 8 than at 64 x 64
    assert bound <= 1.5 * exact, (kind, exact, bound)
    if kind == "transposed-2x2":  # non-overlapping windows: the torus adds nothing
        assert bound <= exact * (1 + 1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_circular_convolutions_are_bounded_exactly(seed, stride):
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=stride, padding_mode="circular").double()
    exact = dense_norm(lambda u: conv(u) - conv(torch.zeros_like(u)), (1, 3, 8, 8))
    assert exact <= module_bound(conv, 8) <= exact * (1 + 1e-9)


# -- local bounds ---------------------------------------------------------------------------------------

DENOISE = make_physics("denoise", size=8, sigma=0.1)


def image(seed: int, n: int = 8) -> torch.Tensor:
    return nn.functional.avg_pool2d(torch.rand(1, 1, n, n, generator=gen(seed), dtype=torch.float64), 3, 1, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_networks_get_sigma_1_times_the_radius(seed):
    x = image(seed)
    nets = [MatrixNet.with_spectrum(8, torch.tensor([2.0, 2.0 - 1e-7, 1.0, 0.3]), generator=gen(seed)),
            ConvolutionNet(torch.randn(8, 8, generator=gen(seed + 5), dtype=torch.float64))]
    sigmas = [2.0, nets[1].sigma_max()]
    for net, sigma in zip(nets, sigmas):
        rho = [0.01 * float(x.norm()), float(x.norm())]
        found = certify_local(net, DENOISE, x, rho)
        for r, b in zip(rho, found.bounds):
            assert b.remainder == 0.0
            assert sigma * r <= b.bound <= sigma * r * (1 + 1e-6), (type(net).__name__, b, sigma * r)


def test_a_linear_convolution_stack_gets_its_composed_norm_not_the_product():
    torch.manual_seed(2)
    seq = nn.Sequential(nn.Linear(4, 12), nn.Linear(12, 12), nn.Linear(12, 3)).double()
    net = TinyMLP(seq, 4)
    x = image(3, 2)
    with torch.no_grad():
        composed = float(torch.linalg.matrix_norm(seq[2].weight @ seq[1].weight @ seq[0].weight, ord=2))
        product = math.prod(float(torch.linalg.matrix_norm(m.weight, ord=2)) for m in seq)
    b = certify_local(net, make_physics("denoise", size=2, sigma=0.1), x, [0.1]).bounds[0]
    assert 0.1 * composed <= b.bound <= 0.1 * composed * (1 + 1e-6) < 0.1 * product


def test_the_identity_is_bounded_by_the_radius_itself():
    x = image(4)
    for rho in (1e-3, 0.1, 10.0):
        b = certify_local(IdentityNet(), DENOISE, x, [rho]).bounds[0]
        assert rho <= b.bound <= rho * (1 + 1e-6)


TINY = make_physics("denoise", size=2, sigma=0.1)

#: Declared before the back-substitution was run on them: every seed, every radius listed, within 2x.
DECLARED_SEEDS = (0, 1, 2, 3, 4)
DECLARED_RATIO = 2.0


@pytest.mark.parametrize("seed", DECLARED_SEEDS)
def test_one_hidden_layer_bound_is_above_the_exact_maximum_and_within_2x(seed):
    # 300 ReLU units on a 2-D input (the network reads two of the four pixels: the 4-D ball projects onto the
    # disk of the same radius); the exact maximum enumerates the line arrangement's vertices and arcs
    seq = mlp([2, 300, 3], seed)
    x = torch.rand(1, 1, 2, 2, generator=gen(seed), dtype=torch.float64)
    radii = [0.05, 0.1, 0.4]
    found = certify_local(TinyMLP(seq, 2), TINY, x, radii)
    for rho, b in zip(radii, found.bounds):
        exact = disk_maximum(seq, x.flatten()[:2], rho)
        assert exact <= b.bound <= b.interval, (seed, rho, exact, b)
        if rho <= 0.1:  # declared; measured 1.08-1.65 (back-substitution), 1.09-2.00 by intervals alone
            assert b.bound <= DECLARED_RATIO * exact, (seed, rho, exact, b.bound)
        assert b.unstable > 0  # the test reaches the nonlinear part


@pytest.mark.parametrize("seed", DECLARED_SEEDS)
def test_two_hidden_layer_bound_is_above_the_exact_maximum_and_within_2x(seed):
    # 200 ReLU units on a 1-D input; the exact maximum sweeps the segment through every activation pattern
    seq = mlp([1, 100, 100, 3], seed)
    x = torch.rand(1, 1, 2, 2, generator=gen(seed), dtype=torch.float64)
    radii = [0.05, 0.2]
    found = certify_local(TinyMLP(seq, 1), TINY, x, radii)
    for rho, b in zip(radii, found.bounds):
        exact = segment_maximum(seq, x.flatten()[:1], rho)
        assert exact <= b.bound <= b.interval, (seed, rho, exact, b)
        if rho <= 0.05:  # declared; measured 1.02-1.48 (intervals alone: 1.16-4.45)
            assert b.bound <= DECLARED_RATIO * exact, (seed, rho, exact, b.bound)
    # back-substitution through the hidden layers is what closes the gap: without it (intervals) seed 1 is 4.4x
    if seed == 1:
        assert found.bounds[0].interval > 3 * found.bounds[0].bound


def test_back_substitution_keeps_cancellations_that_intervals_lose():
    # f(v) = relu(relu(v) + 5) - relu(relu(v) + 5) = 0: the first unit flips over |r| <= 1, the second layer cannot;
    # the flip reaches the output along two paths that cancel (W_3 D_2 W_2 = 0), which back-substitution sees and
    # boxes through |W_3| |D_2| |W_2| do not
    layers = [nn.Linear(1, 1), nn.Linear(1, 2), nn.Linear(2, 1, bias=False)]
    with torch.no_grad():
        for lin, w, b in zip(layers, ([[1.0]], [[1.0], [1.0]], [[1.0, -1.0]]), ([0.0], [5.0, 5.0], None)):
            lin.double().weight.copy_(torch.tensor(w))
            if b is not None:
                lin.bias.copy_(torch.tensor(b))
    seq = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])
    b = certify_local(TinyMLP(seq, 1), TINY, torch.zeros(1, 1, 2, 2, dtype=torch.float64), [1.0]).bounds[0]
    assert b.unstable == 1 and b.backsub <= 1e-12 and b.interval >= 1.0


def test_the_bound_over_rho_never_decreases():
    seq = mlp([2, 300, 3], 0)
    x = torch.rand(1, 1, 2, 2, generator=gen(0), dtype=torch.float64)
    radii = [0.01, 0.02, 0.05, 0.1, 0.2, 0.4]
    per = [b.bound / b.rho for b in certify_local(TinyMLP(seq, 2), TINY, x, radii).bounds]
    assert all(a <= b * (1 + 1e-12) for a, b in zip(per, per[1:]))


def test_layers_without_a_rule_are_named():
    dn = DnCNN(depth=3, width=2).eval()
    dn.body[2] = nn.InstanceNorm2d(2)
    with pytest.raises(Unsupported, match=r"body\[2\] InstanceNorm2d"):
        certify_local(dn, DENOISE, image(0), [0.1])
    seq = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    with pytest.raises(Unsupported, match="Tanh"):
        certify_local(TinyMLP(seq, 2), TINY, image(0, 2), [0.1])

    class Foreign(nn.Module):
        def forward(self, y, physics):
            return y

    with pytest.raises(Unsupported, match="no bound rule for Foreign"):
        certify_local(Foreign(), DENOISE, image(0), [0.1])


class PoolNet(nn.Module):
    """Conv, batch norm, leaky ReLU, average pooling, upsampling, a concatenation and a skip: every rule at once."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.LeakyReLU(0.1))
        self.b = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(),
                               nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        self.c = nn.Sequential(nn.Conv2d(6, 1, 3, padding=1))

    def forward(self, y, physics):
        h = physics.H(y).real.to(self.c[0].weight.dtype)
        z = self.a(h)
        return h + self.c(torch.cat([self.b(z), z], 1))


@program(PoolNet)
def _pool(net, physics, domain):
    def run(ops, u):
        h = ops.linear_map(lambda v: physics.H(v).real, u)
        z = ops.sequential(net.a, h, "a")
        return ops.add(h, ops.sequential(net.c, ops.cat([ops.sequential(net.b, z, "b"), z]), "c"))
    return run


def _attack(f, x, rho, steps=60, restarts=8, seed=0):
    """Projected gradient ascent on ||f(x + r) - f(x)|| over ||r|| <= rho, random restarts: a lower bound."""
    g = gen(seed)
    base = f(x).detach()
    best = 0.0
    for _ in range(restarts):
        r = torch.randn(x.shape, generator=g, dtype=x.dtype)
        r = (r * rho / r.norm()).requires_grad_(True)
        for _ in range(steps):
            loss = (f(x + r) - base).norm()
            (grad,) = torch.autograd.grad(loss, r)
            with torch.no_grad():
                r += rho * 0.2 * grad / grad.norm().clamp_min(1e-30)
                r *= min(1.0, rho / float(r.norm()))
            best = max(best, float(loss.detach()))
        best = max(best, float((f(x + r) - base).norm().detach()))
    return best


def test_every_rule_at_once_is_sound_and_back_substitution_is_the_tighter():
    torch.manual_seed(3)
    net = PoolNet().double()
    with torch.no_grad():
        net.a[1].running_mean.uniform_(-0.2, 0.2)
        net.a[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    x = image(5)
    radii = [0.02, 0.2]
    found = certify_local(net, DENOISE, x, radii)
    for rho, b in zip(radii, found.bounds):
        reached = _attack(lambda u: net(DENOISE.A(u), DENOISE), x, rho)
        assert reached <= b.bound <= b.interval, (rho, reached, b)
        assert b.unstable > 0
    assert found.bounds[1].backsub < found.bounds[1].interval


def test_the_backward_pass_reads_the_measured_entries_in_the_measurement_domain():
    # MRI (complex measurements on a mask), a U-Net on (Re, Im) of A* y, a radius so small that no unit can flip:
    # the backward pass's coefficients must equal the Jacobian's rows (on the measured entries, re and im), so
    # its remainder is zero up to rounding
    from survey.certify.backsub import backward_remainder
    from survey.certify.programs import basis_for, builder_for, coefficients_for
    from survey.certify.propagate import Program, linearise
    from survey.nets.unet import UNet

    physics = make_physics("mri", size=8, ratio=0.5, mask="gaussian-lines", seed=0)
    torch.manual_seed(0)
    net = UNet(width=2, depth=1, input_mode="complex").double().eval()
    x = image(6)
    y = physics.A(x)
    prog = Program(builder_for(net)(net, physics, "measurement"), lambda u: u, y,
                   coefficients_for(physics, "measurement", x))
    units, count = basis_for(physics, "measurement", x)
    lin = linearise(prog, units, count)
    rho = 1e-12
    bounds = [(-rho * r[None], rho * r[None], torch.zeros_like(lin.clean.inputs[k] if kind[0] != "maxpool" else
                                                               torch.nn.functional.max_pool2d(lin.clean.inputs[k], 2)))
              for k, (r, kind) in enumerate(zip(lin.rows, lin.clean.kinds))]
    up, down = backward_remainder(prog, lin, bounds, 1.0)
    scale = float(lin.jacobian.abs().max())
    assert float(up.abs().max()) <= 1e-12 * scale * count and float(down.abs().max()) <= 1e-12 * scale * count
    with torch.no_grad():
        assert torch.allclose(net(y, physics), lin.output)


def test_a_magnitude_input_unet_is_bounded_above_its_attack():
    # |A* y| as the input (|z| near zero at the background is the hard case), max-pooling, a transposed conv
    from survey.nets.unet import UNet

    physics = make_physics("mri", size=8, ratio=0.5, mask="gaussian-lines", seed=0)
    torch.manual_seed(1)
    net = UNet(width=3, depth=1, input_mode="magnitude").double().eval()
    x = image(7)
    x[..., :2, :] = 0.0  # a background strip
    radii = [1e-3, 3e-2]
    found = certify_local(net, physics, x, radii)
    for rho, b in zip(radii, found.bounds):
        reached = _attack(lambda u: net(physics.A(u), physics), x, rho)
        assert reached <= b.bound <= b.interval, (rho, reached, b)
    assert found.bounds[0].bound <= 3 * _attack(lambda u: net(physics.A(u), physics), x, radii[0])
