"""The fastMRI-size networks (fastMRI U-Net, end-to-end VarNet) at small sizes: shapes, gradients, the
VarNet's k-space conventions against the operator, ACS-only sensitivities, and the zoo recipes."""

import pytest
import torch

from survey.nets.e2e_varnet import E2EVarNet, acs_mask, rss
from survey.nets.fastmri_unet import FastMRIUNet, FastMRIUNetCore
from survey.physics import make_physics

N = 32


def _single():
    return make_physics("mri", size=N, mask="fastmri-random", acceleration=4.0, seed=0)


def _multi(coils=4, mask="fastmri-equispaced"):
    return make_physics("pmri", size=N, mask=mask, acceleration=4.0, seed=0, coils=coils)


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 1, N, N, generator=g, dtype=torch.float32)


def test_fastmri_unet_baseline_has_the_published_size():
    # fastMRI's baseline: chans 32, 4 pool layers, about 7.8M parameters
    count = sum(p.numel() for p in FastMRIUNet(chans=32, pools=4).parameters())
    assert 7.7e6 < count < 7.8e6


@pytest.mark.parametrize("size", [32, 36])  # 36: halving gives odd sizes, the decoder must pad back
def test_unet_core_keeps_the_image_size(size):
    out = FastMRIUNetCore(2, 3, chans=4, pools=2)(torch.randn(1, 2, size, size))
    assert out.shape == (1, 3, size, size)


@pytest.mark.parametrize("net_cls, kw", [(FastMRIUNet, {"chans": 4, "pools": 2}),
                                         (E2EVarNet, {"cascades": 2, "chans": 4, "pools": 2, "sens_chans": 2,
                                                      "sens_pools": 2})])
@pytest.mark.parametrize("physics_fn", [_single, _multi])
def test_net_convention_shape_and_input_gradient(net_cls, kw, physics_fn):
    physics = physics_fn()
    net = net_cls(**kw).eval()
    y = physics.A(_image()).detach().requires_grad_(True)
    out = net(y, physics)
    assert out.shape == (2, 1, N, N) and not torch.is_complex(out) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    params = [p for p in net.parameters() if p.grad is not None]
    assert params and all(torch.isfinite(p.grad).all() for p in params)


def test_acs_band_is_the_contiguous_centre_of_the_mask():
    physics = _multi()
    band = torch.fft.fftshift(acs_mask(physics), dim=(-2, -1))  # centred
    columns = band.all(dim=0)
    assert bool(band.any(dim=0).eq(columns).all())              # whole columns
    idx = torch.nonzero(columns).flatten()
    assert idx.numel() >= round(N * 0.08) and bool((idx.diff() == 1).all()) and N // 2 in idx.tolist()
    assert bool(physics.mask[:, idx].all())                     # every ACS column is sampled
    lo, hi = int(idx[0]) - 1, int(idx[-1]) + 1                   # the band stops at an unsampled column
    assert not bool(physics.mask[:, lo].all()) and not bool(physics.mask[:, hi].all())


def test_sensitivities_come_from_the_acs_lines_only_and_are_normalised():
    physics = _multi()
    net = E2EVarNet(cascades=1, chans=4, pools=2, sens_chans=4, sens_pools=2).eval()
    y = physics.A(_image())
    outside = physics.sampling & ~acs_mask(physics)
    noise = torch.randn_like(y) * outside
    with torch.no_grad():
        maps = net.maps(y, physics)
        assert torch.allclose(maps, net.maps(y + noise, physics), atol=1e-5)
        assert torch.allclose(rss(maps), torch.ones(2, 1, N, N), atol=1e-4)


def _zero_refinements(net: E2EVarNet) -> None:
    for cascade in net.cascades:
        cascade.refine.register_forward_hook(lambda module, inputs, out: out * 0)


def test_varnet_kspace_layout_matches_the_operator_and_dc_is_exact_at_full_sampling():
    # With the refinements switched off, k stays y (soft DC of y against y is 0), and at full sampling the
    # root-sum-of-squares of y's coil images is |x| (sum_c |S_c|^2 = 1): the net's FFT layout and coil
    # handling agree with the operator's.
    full = torch.ones(N, N, dtype=torch.bool)
    physics = _multi().with_mask(full)
    net = E2EVarNet(cascades=2, chans=4, pools=2, sens_chans=2, sens_pools=2).eval()
    _zero_refinements(net)
    x = _image()
    with torch.no_grad():
        assert torch.allclose(net(physics.A(x), physics), x, atol=1e-5)


def test_soft_data_consistency_pulls_sampled_lines_to_the_data():
    # one cascade, refinement off, dc weight 1: sampled entries become y, unsampled ones keep k
    physics = _multi()
    net = E2EVarNet(cascades=1, chans=4, pools=2, sens_chans=2, sens_pools=2).eval()
    _zero_refinements(net)
    y = physics.A(_image())
    k = torch.randn_like(y)
    maps = net.maps(y, physics)
    with torch.no_grad():
        out = net.cascades[0](k, y, physics.sampling, maps)
    m = physics.sampling
    assert torch.allclose(out[..., m], y[..., m], atol=1e-6)
    assert torch.allclose(out[..., ~m], k[..., ~m], atol=1e-6)


@pytest.mark.parametrize("name", ["fastmri-unet", "fastmri-unet-mc", "e2e-varnet", "e2e-varnet-sc"])
def test_zoo_recipes_are_320_random_init_with_fastmri_masks(name):
    from survey.nets import zoo

    e = zoo.entry(name)
    assert e.physics["size"] == 320 and e.physics["mask"].startswith("fastmri-")
    assert zoo.is_random_init(name) and not zoo.is_trained(name) and name not in zoo.ZOO
    assert name in zoo.zoo_names()
    card = zoo.load_card(name)
    assert card["init"] == "random" and card["trained"] is False and "not trained" in card["notes"]
    physics = zoo.build_physics(name)
    assert physics.size == 320 and physics.describe()["acceleration"] == 4.0


def test_random_init_is_reproducible_and_leaves_the_global_rng_alone(monkeypatch):
    from survey.nets import zoo

    # a small stand-in recipe, so the check builds in milliseconds
    small = zoo.ZooEntry("tiny-rand", "t", "fastmri_unet", {"chans": 2, "pools": 1},
                         {"kind": "mri", "size": 16, "mask": "fastmri-random", "acceleration": 4.0, "seed": 0},
                         "brain", steps=0, extra={"init": "random", "seed": 3})
    monkeypatch.setitem(zoo.SCALE_ZOO, "tiny-rand", small)
    state = torch.random.get_rng_state()
    a, _ = zoo.load_network("tiny-rand")
    b, _ = zoo.load_network("tiny-rand")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_multicoil_fastmri_masks_match_single_coil_and_move_with_acceleration():
    single, multi = _single(), make_physics("pmri", size=N, mask="fastmri-random", acceleration=4.0, seed=0, coils=4)
    assert torch.equal(single.mask, multi.mask) and multi.describe()["acceleration"] == 4.0
    eight = multi.at_ratio(0.125)
    assert eight.coils == 4 and eight.describe()["acceleration"] == 8.0 and eight.ratio < multi.ratio
    with pytest.raises(ValueError, match="acceleration"):
        make_physics("pmri", size=N, mask="uniform-lines", ratio=0.25, acceleration=4.0)
