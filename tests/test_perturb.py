"""Measurement-noise perturbation families (gaussian, poisson, sphere): properties, noise statistics, SNR,
photon counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from survey.perturb import family_names, make_family, measured_mask
from survey.perturb.gaussian import sigma_from_snr, snr_from_sigma
from survey.perturb.poisson import ZERO_COUNT_FLOOR, poisson_quantile
from survey.physics import make_physics

SIZE = 16
PHYSICS = {
    "mri": dict(size=SIZE, ratio=0.3),
    "pmri": dict(size=SIZE, ratio=0.3, coils=3),
    "radon": dict(size=SIZE, views=12),
    "denoise": dict(size=SIZE),
}
#: One severity per family for the property tests (sigma, I0 photons per bin, a norm).
SEVERITY = {"gaussian": 0.05, "poisson": 500.0, "sphere": 0.3}
REAL_ONLY = {"poisson"}


@pytest.fixture(scope="module")
def operators():
    return {kind: make_physics(kind, **params) for kind, params in PHYSICS.items()}


def images(count: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((count, 1, SIZE, SIZE), generator=gen, dtype=torch.float64)


#: The measurement-noise families tested here (the physical ones are in test_families.py).
NOISE_FAMILIES = ("gaussian", "poisson", "sphere")


def pairs():
    for name in NOISE_FAMILIES:
        for kind in PHYSICS:
            if name in REAL_ONLY and kind in ("mri", "pmri"):
                continue
            yield name, kind


def clean(physics, kind: str, count: int = 3) -> torch.Tensor:
    x = images(count)
    if kind == "radon":
        x = x * (2.0 / SIZE)  # line integrals of a few units: photon counts well away from 0
    return physics.A(x)


def latents(family, physics, count: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((count, *family.latent_shape(physics)), generator=gen, dtype=torch.float64)


def test_registry():
    assert set(NOISE_FAMILIES) <= set(family_names())
    with pytest.raises(ValueError, match="unknown perturbation family"):
        make_family("nope")
    with pytest.raises(ValueError, match="domain"):
        make_family("sphere", domain="nowhere")


@pytest.mark.parametrize("name,kind", list(pairs()))
def test_family_properties(name, kind, operators):
    """Identity severity gives y exactly; deterministic; batch = one at a time; nothing off the measured entries."""
    physics = operators[kind]
    family = make_family(name)
    y = clean(physics, kind)
    z = latents(family, physics, y.shape[0])
    mask = measured_mask(physics)
    dof = int(mask.sum()) * (2 if torch.is_complex(y) else 1)
    assert family.latent_shape(physics) == (dof,)

    assert torch.equal(family.apply(y, z, family.identity_severity, physics), y)
    first = family.apply(y, z, SEVERITY[name], physics)
    assert torch.equal(first, family.apply(y.clone(), z.clone(), SEVERITY[name], physics))
    assert first.shape == y.shape and first.dtype == y.dtype
    assert not torch.equal(first, y)
    single = torch.cat([family.apply(y[i:i + 1], z[i:i + 1], SEVERITY[name], physics) for i in range(y.shape[0])])
    torch.testing.assert_close(first, single, rtol=0, atol=1e-12)
    # one image broadcast against a batch of latents, and a per-sample severity
    torch.testing.assert_close(family.apply(y[:1], z, SEVERITY[name], physics),
                               torch.cat([family.apply(y[:1], z[i:i + 1], SEVERITY[name], physics)
                                          for i in range(z.shape[0])]), rtol=0, atol=1e-12)
    per = torch.full((y.shape[0],), SEVERITY[name], dtype=torch.float64)
    torch.testing.assert_close(family.apply(y, z, per, physics), first, rtol=0, atol=0)
    off = ~mask.expand_as(y)
    if name == "sphere" and family.domain == "image":
        # y' - y = A v: off the mask A reaches below 1e-6 of its largest entry (Radon's corner bins)
        moved = (first - y).abs()
        if bool(off.any()):
            assert float(moved[off].amax()) <= 1e-5 * float(moved.max())
    else:
        assert torch.equal(first[off], y[off])


@pytest.mark.parametrize("kind", ["mri", "pmri", "radon"])
def test_gaussian_variance_per_entry(kind, operators):
    """E|e|^2 = sigma^2 per measured entry; complex: real and imaginary parts sigma^2 / 2 each."""
    physics = operators[kind]
    family = make_family("gaussian")
    y = clean(physics, kind, 1)
    sigma = 0.2
    draws = 3000
    z = latents(family, physics, draws, seed=7)
    e = (family.apply(y, z, sigma, physics) - y)[:, measured_mask(physics)]  # (draws, m)
    count = e.numel()
    power = float((e.abs() ** 2).mean()) / sigma**2
    # chi-square: |e|^2 / sigma^2 has variance 1 (complex, 2 dof / 2) or 2 (real) per entry
    se = math.sqrt((1.0 if torch.is_complex(e) else 2.0) / count)
    assert abs(power - 1.0) < 5 * se
    per_entry = (e.abs() ** 2).mean(dim=0) / sigma**2  # each entry on its own
    assert float((per_entry - 1).abs().max()) < 6 * math.sqrt((1.0 if torch.is_complex(e) else 2.0) / draws)
    if torch.is_complex(e):
        for part in (e.real, e.imag):
            assert abs(float(part.pow(2).mean()) / sigma**2 - 0.5) < 5 * math.sqrt(0.5 / count)
        assert abs(float((e.real * e.imag).mean())) / sigma**2 < 5 * math.sqrt(0.25 / count)


@pytest.mark.parametrize("kind", ["mri", "radon", "pmri"])
def test_snr_conversion(kind, operators):
    physics = operators[kind]
    family = make_family("gaussian")
    y = clean(physics, kind, 2)
    sigma = sigma_from_snr(y, 20.0, physics)
    per_coil = kind == "pmri"
    assert sigma.shape == ((2, 3) if per_coil else (2,))
    torch.testing.assert_close(snr_from_sigma(y, sigma, physics), torch.full_like(sigma, 20.0))
    mask = measured_mask(physics)
    # by hand: ||y||^2 / (m sigma^2)
    if per_coil:
        m = mask.reshape(3, -1).sum(dim=1)
        hand = (y.abs() ** 2).reshape(2, 3, -1).sum(-1) / (m * 10 ** 2)
    else:
        hand = (y.abs() ** 2).reshape(2, -1).sum(-1) / (mask.sum() * 10 ** 2)
    torch.testing.assert_close(sigma, hand.sqrt())
    # realised: the noise power per measured entry of each image (and coil) is sigma^2
    draws = 400
    z = latents(family, physics, 2 * draws, seed=3)
    yy = y.repeat_interleave(draws, dim=0)
    noisy = family.apply(yy, z, sigma.repeat_interleave(draws, dim=0), physics)
    e = (noisy - yy) * mask
    if per_coil:
        realised = (e.abs() ** 2).reshape(2, draws, 3, -1).sum(-1).mean(1) / m
    else:
        realised = (e.abs() ** 2).reshape(2, draws, -1).sum(-1).mean(1) / mask.sum()
    torch.testing.assert_close(realised / sigma**2, torch.ones_like(sigma), rtol=0, atol=0.05)


def test_poisson_counts_mean_and_variance(operators):
    """N = I0 exp(-y') has mean and variance I0 exp(-p) per bin within sampling error."""
    physics = operators["radon"]
    family = make_family("poisson", fov_cm=None)  # y taken as physical line integrals
    y = clean(physics, "radon", 1)
    dose = 200.0
    draws = 4000
    z = latents(family, physics, draws, seed=11)
    noisy = family.apply(y, z, dose, physics)
    mask = measured_mask(physics).expand_as(noisy)
    counts = (dose * torch.exp(-noisy[mask].reshape(draws, -1)))
    lam = dose * torch.exp(-y[measured_mask(physics).expand_as(y)])
    assert bool((lam > 20).all())  # no zero counts here: the floor does not enter
    assert torch.allclose(counts, counts.round(), atol=1e-6)
    mean_z = (counts.mean(0) - lam) / (lam / draws).sqrt()
    assert float(mean_z.abs().max()) < 5
    assert abs(float(mean_z.mean())) < 5 / math.sqrt(lam.numel())
    # the variance ratio of a Poisson sample: Var(s^2 / lam) ~ (1 / lam + 2) / draws
    ratio = counts.var(0) / lam
    assert float(((ratio - 1) / ((1 / lam + 2) / draws).sqrt()).abs().max()) < 5
    assert abs(float(ratio.mean()) - 1) < 5 * math.sqrt(2 / draws / lam.numel())


def test_poisson_zero_counts_floor():
    physics = make_physics("denoise", size=4)
    family = make_family("poisson", fov_cm=None)
    y = torch.full((1, 1, 4, 4), 30.0, dtype=torch.float64)  # I0 exp(-30): no photons arrive
    z = torch.zeros((1, 16), dtype=torch.float64)
    out = family.apply(y, z, 100.0, physics)
    torch.testing.assert_close(out, torch.full_like(y, -math.log(ZERO_COUNT_FLOOR / 100.0)))
    with pytest.raises(ValueError, match="I0"):
        family.apply(y, z, 0.0, physics)
    with pytest.raises(ValueError, match="real"):
        family.apply(y.to(torch.complex128), z, 100.0, physics)


def test_poisson_physical_scale(operators):
    """By default an image value of 1 attenuates like water (0.2 / cm) over a 25 cm field of view: the
    counts are Poisson(I0 exp(-a p)) with a = 0.2 * 25 / n, and y' comes back in the operator's units."""
    physics = operators["radon"]
    family = make_family("poisson")
    a = 0.2 * 25.0 / physics.size
    assert family.attenuation(physics) == pytest.approx(a)
    y = clean(physics, "radon", 1)
    z = latents(family, physics, 2000, seed=5)
    noisy = family.apply(y, z, 1e4, physics)
    mask = measured_mask(physics).expand_as(noisy)
    counts = 1e4 * torch.exp(-a * noisy[mask].reshape(2000, -1))
    lam = 1e4 * torch.exp(-a * y[measured_mask(physics).expand_as(y)])
    assert torch.allclose(counts, counts.round(), atol=1e-5)
    assert float(((counts.mean(0) - lam) / (lam / 2000).sqrt()).abs().max()) < 5
    torch.testing.assert_close(family.apply(y, z[:1], math.inf, physics), y)
    with pytest.raises(ValueError, match="mu_cm"):
        make_family("poisson", fov_cm=-1.0)


@pytest.mark.parametrize("lam", [0.01, 0.7, 3.0, 40.0, 1e3, 1e5])
def test_poisson_quantile_matches_scipy(lam):
    z = torch.linspace(-6, 6, 121, dtype=torch.float64)
    ours = poisson_quantile(z, torch.tensor(lam)).numpy()
    zz = z.numpy()
    ref = np.where(zz > 0, stats.poisson.isf(stats.norm.sf(zz), lam), stats.poisson.ppf(stats.norm.cdf(zz), lam))
    # scipy's discrete quantile can miss by one where the CDF is within rounding of u; check ours exactly
    for k, r, x in zip(ours, ref, zz):
        if k != r:
            u = stats.norm.cdf(x)
            assert stats.poisson.cdf(k, lam) >= u - 1e-14 and stats.poisson.cdf(k - 1, lam) <= u + 1e-14
    assert np.mean(ours == ref) > 0.97
    assert np.all(np.diff(ours) >= 0)


def test_sphere_norms(operators):
    """The sphere puts y' - y = A v with ||v|| = radius (image domain) or ||e|| = radius (measurements)."""
    for kind in ("mri", "radon"):
        physics = operators[kind]
        y = clean(physics, kind, 4)
        for domain in ("image", "measurement"):
            family = make_family("sphere", domain=domain)
            z = latents(family, physics, 4, seed=5)
            unit, shift = family.direction(z, physics, y)
            torch.testing.assert_close(unit.reshape(4, -1).norm(dim=1), torch.ones(4, dtype=torch.float64))
            radius = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
            out = family.apply(y, z, radius, physics)
            if domain == "measurement":
                torch.testing.assert_close((out - y).reshape(4, -1).norm(dim=1), radius)
            else:
                assert not torch.is_complex(unit)
                torch.testing.assert_close(out - y, radius.view(4, *[1] * (y.ndim - 1)) * physics.A(unit))
