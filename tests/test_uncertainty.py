"""Uncertainty companions (survey.nets.uncertainty): interval arithmetic is sound layer by layer and
through whole networks, the INN with point intervals is the base network, the tail split reproduces
the network, MC dropout and ProbOut behave, and stored companions load with their hashes checked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from survey.nets.dncnn import DnCNN
from survey.nets.uncertainty import IntervalNet, MCDropoutNet, ProbOutNet, build_companion
from survey.nets.uncertainty.inn import IntervalConv2d, interval_linear, interval_relu
from survey.nets.uncertainty.tail import LinearStep, Split, fold_batchnorm, linear_op
from survey.nets.unet import UNet
from survey.physics import make_physics

SIZE = 16


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bounds_around(w: torch.Tensor, g: torch.Generator, scale: float = 0.1):
    """Random [lo, hi] containing w."""
    return (w - scale * torch.rand(w.shape, generator=g, dtype=w.dtype),
            w + scale * torch.rand(w.shape, generator=g, dtype=w.dtype))


def _inside(lo, hi, g):
    return lo + (hi - lo) * torch.rand(lo.shape, generator=g, dtype=lo.dtype)


@pytest.mark.parametrize("kind", ["conv", "convT"])
@pytest.mark.parametrize("signed", [False, True])
def test_interval_linear_contains_every_member(kind, signed):
    g = _gen(1)
    step = LinearStep(kind, 2 if kind == "convT" else 1, 0 if kind == "convT" else 1, False)
    op = linear_op(step)
    w = torch.randn((3, 4, 2, 2) if kind == "convT" else (4, 3, 3, 3), generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    w_lo, w_hi = _bounds_around(w, g)
    b_lo, b_hi = _bounds_around(b, g)
    centre = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    centre = centre if signed else centre.abs()
    lo, hi = centre - 0.2 * torch.rand(centre.shape, generator=g, dtype=torch.float64), centre
    lo = lo if signed else lo.clamp_min(0)
    z_lo, z_hi = interval_linear(lo, hi, w_lo, w_hi, b_lo, b_hi, op)
    for _ in range(50):  # random members of every interval
        x, wx, bx = _inside(lo, hi, g), _inside(w_lo, w_hi, g), _inside(b_lo, b_hi, g)
        z = op(x, wx) + bx.view(1, -1, 1, 1)
        assert bool((z_lo <= z + 1e-12).all() and (z <= z_hi + 1e-12).all())
    # corners of the weight box are the extreme members: they reach the bounds on a point input
    z_lo_pt, z_hi_pt = interval_linear(centre, centre, w_lo, w_hi, b_lo, b_hi, op)
    best_lo = op(centre.clamp_min(0), w_lo) + op(centre.clamp_max(0), w_hi) + b_lo.view(1, -1, 1, 1)
    torch.testing.assert_close(z_lo_pt, best_lo)
    assert bool((z_lo_pt <= z_hi_pt).all())


def test_interval_relu_and_point_intervals():
    g = _gen(2)
    lo = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    hi = lo + torch.rand(lo.shape, generator=g, dtype=torch.float64)
    r_lo, r_hi = interval_relu(lo, hi)
    x = _inside(lo, hi, g)
    assert bool((r_lo <= torch.relu(x)).all() and (torch.relu(x) <= r_hi).all())
    # point weights and point inputs: interval arithmetic is ordinary arithmetic
    conv = nn.Conv2d(3, 5, 3, padding=1).double()
    layer = IntervalConv2d(conv)
    z_lo, z_hi = layer(x, x)
    torch.testing.assert_close(z_lo, conv(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(z_hi, conv(x), rtol=0, atol=1e-12)


def test_folded_batchnorm_is_the_layer_pair():
    g = _gen(3)
    conv, bn = nn.Conv2d(2, 4, 3, padding=1, bias=False).double(), nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn.running_mean.normal_(generator=g)
        bn.running_var.uniform_(0.5, 2.0, generator=g)
        bn.weight.normal_(generator=g)
        bn.bias.normal_(generator=g)
    bn.eval()
    w, b = fold_batchnorm(conv.weight, conv.bias, bn)
    x = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(F.conv2d(x, w, padding=1) + b.view(1, -1, 1, 1), bn(conv(x)))


def _randomised(net: nn.Module, seed: int) -> nn.Module:
    """Untrained net with non-trivial BatchNorm statistics, in eval mode, float64."""
    g = _gen(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    return net.double().eval()


def _nets():
    return {
        "dncnn": (_randomised(DnCNN(depth=6, width=8), 4), make_physics("denoise", size=SIZE, sigma=0.1)),
        "unet": (_randomised(UNet(width=4, depth=2), 5), make_physics("radon", size=SIZE, views=12).double()),
    }


@pytest.mark.parametrize("arch", ["dncnn", "unet"])
def test_split_reproduces_the_network(arch):
    net, physics = _nets()[arch]
    y = physics.A(torch.rand(2, 1, SIZE, SIZE, generator=_gen(6), dtype=torch.float64))
    for layers in (1, 3, 4):
        split = Split(net, layers)
        torch.testing.assert_close(split.run(split.trunk(y, physics)), net(y, physics), rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch", ["dncnn", "unet"])
def test_inn_with_point_weights_is_the_network_and_widened_bounds_contain_it(arch):
    net, physics = _nets()[arch]
    g = _gen(7)
    y = physics.A(torch.rand(3, 1, SIZE, SIZE, generator=g, dtype=torch.float64))
    inn = IntervalNet(net, layers=4).double()
    lo, hi = inn.bounds(y, physics)
    torch.testing.assert_close(lo, net(y, physics), rtol=0, atol=1e-10)
    torch.testing.assert_close(hi, net(y, physics), rtol=0, atol=1e-10)
    with torch.no_grad():  # widen every bound randomly: W_lo <= W <= W_hi
        for group in (inn.w_lo, inn.b_lo):
            for p in group:
                p.sub_(0.05 * torch.rand(p.shape, generator=g, dtype=p.dtype))
        for group in (inn.w_hi, inn.b_hi):
            for p in group:
                p.add_(0.05 * torch.rand(p.shape, generator=g, dtype=p.dtype))
    lo, hi = inn.bounds(y, physics)
    f = net(y, physics)
    assert bool((lo <= f + 1e-12).all() and (f <= hi + 1e-12).all())
    assert float((hi - lo).detach().mean()) > 0
    # every network whose tail weights lie in the boxes is inside the bounds too
    tail = inn.split.tail_linear
    for _ in range(5):
        weights = {k: (_inside(inn.w_lo[j], inn.w_hi[j], g), _inside(inn.b_lo[j], inn.b_hi[j], g))
                   for j, k in enumerate(tail)}
        out = inn.split.run(inn.split.trunk(y, physics), weights)
        assert bool((lo <= out + 1e-12).all() and (out <= hi + 1e-12).all())


def test_inn_storage_keeps_containment_and_training_keeps_the_constraint():
    net, physics = _nets()["dncnn"]
    net = net.float()
    physics = make_physics("denoise", size=SIZE, sigma=0.1)
    inn = IntervalNet(net, layers=3, beta=1e-2)
    opt = torch.optim.Adam(inn.trainable(), lr=1e-2)
    g = _gen(8)
    x = torch.rand(4, 1, SIZE, SIZE, generator=g)
    y = physics.noisy(x, g)
    for _ in range(5):
        loss = inn.loss(y, physics, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        inn.project_()
    for j, k in enumerate(inn.split.tail_linear):
        assert bool((inn.w_lo[j] <= inn.split.weight(k)).all() and (inn.split.weight(k) <= inn.w_hi[j]).all())
    state = inn.companion_state()
    assert all(v.dtype == torch.bfloat16 and bool((v >= 0).all()) for v in state.values())
    again = IntervalNet(net, layers=3)
    again.load_companion_state(state)
    with torch.no_grad():
        lo, hi = again.bounds(y, physics)
        f = net(y, physics)
    assert bool((lo <= f).all() and (f <= hi).all())


@pytest.mark.parametrize("name", ["dncnn", "lactunet"])
def test_inn_equals_trained_zoo_network(name):
    from survey.nets.zoo import ZOO, load_network

    net, physics = load_network(name)
    net, physics = net.double(), physics.double()
    x = torch.rand(2, 1, physics.size, physics.size, generator=_gen(9), dtype=torch.float64)
    y = physics.A(x)
    layers = {"dncnn": 8, "lactunet": 7}[name]
    inn = IntervalNet(net, layers=layers).double()
    with torch.no_grad():
        lo, hi = inn.bounds(y, physics)
        f = net(y, physics)
    assert float((lo - f).abs().max()) <= 1e-6 and float((hi - f).abs().max()) <= 1e-6
    assert name in ZOO


def test_mcdropout_replays_from_its_generator_and_starts_at_the_network():
    net, physics = _nets()["dncnn"]
    mc = MCDropoutNet(net, layers=4, p=0.2, passes=6, chunk=4).double()
    y = physics.A(torch.rand(2, 1, SIZE, SIZE, generator=_gen(10), dtype=torch.float64))
    torch.testing.assert_close(mc.mean_prediction(y, physics), net(y, physics), rtol=0, atol=1e-12)
    u1 = mc.uncertainty(y, physics, _gen(11))
    u2 = mc.uncertainty(y, physics, _gen(11))
    assert u1.shape == (2, 1, SIZE, SIZE) and torch.equal(u1, u2) and float(u1.mean()) > 0
    assert mc.dropout_after == (0, 2)
    runs = mc.passes_of(y, physics, _gen(12), passes=6)
    assert runs.shape == (6, 2, 1, SIZE, SIZE)
    unet, radon = _nets()["unet"]
    mcu = MCDropoutNet(unet, layers=4, p=0.5)
    kinds = [s.kind for _, s, k in mcu.split.tail_steps() if k is not None]
    assert [kinds[j] for j in mcu.dropout_after] == ["convT"]


def test_probout_trains_only_its_head_and_predicts_positive_std():
    net, physics = _nets()["unet"]
    po = ProbOutNet(net).double()
    x = torch.rand(2, 1, SIZE, SIZE, generator=_gen(13), dtype=torch.float64)
    y = physics.A(x)
    mean, logvar = po.predict(y, physics)
    torch.testing.assert_close(mean, net(y, physics), rtol=0, atol=1e-12)
    po.loss(y, physics, x).backward()
    assert all(p.grad is None for p in net.parameters())
    assert all(p.grad is not None for p in po.head.parameters())
    assert bool((po.uncertainty(y, physics) > 0).all())


def test_uncertainty_is_differentiable_in_the_measurements():
    net, physics = _nets()["dncnn"]
    y = physics.A(torch.rand(1, 1, SIZE, SIZE, generator=_gen(14), dtype=torch.float64)).requires_grad_(True)
    for method, params in (("inn", {"layers": 3}), ("mcdropout", {"layers": 3, "passes": 4}), ("probout", {})):
        model = build_companion(method, net, **params).double()
        if method == "inn":
            with torch.no_grad():
                for p in model.w_hi:
                    p.add_(0.01)
        (grad,) = torch.autograd.grad(model.uncertainty(y, physics, _gen(15)).sum(), y)
        assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0, method


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="inn"):
        build_companion("ensemble", DnCNN(depth=3, width=2))


def test_trained_companions_load_with_their_hashes_checked(tmp_path, monkeypatch):
    import json
    import shutil

    from survey.nets import zoo
    from survey.nets.uncertainty import load_companion, load_companions
    from survey.nets.zoo import load_network

    net, physics = load_network("dncnn")
    companions = load_companions("dncnn", net)
    assert set(companions) == {"inn", "mcdropout", "probout"}
    assert all(not p.requires_grad for c in companions.values() for p in c.parameters())
    x = torch.rand(1, 1, 64, 64, generator=_gen(16))
    y = physics.A(x)
    with torch.no_grad():
        lo, hi = companions["inn"].bounds(y, physics)
        f = net(y, physics)
    assert bool((lo <= f).all() and (f <= hi).all())
    # a card naming other base weights is refused
    for name in ("dncnn", "dncnn-inn"):
        for suffix in (".json", ".safetensors"):
            shutil.copy(zoo.WEIGHTS_DIR / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    card = json.loads((tmp_path / "dncnn-inn.json").read_text())
    card["base_weights_sha256"] = "0" * 64
    (tmp_path / "dncnn-inn.json").write_text(json.dumps(card))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="retrain"):
        load_companion("dncnn-inn", net)
