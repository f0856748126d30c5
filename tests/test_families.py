"""Physical perturbation families (issue 17): exact identities, the physics each family claims, severities.

Parametrised over every registered family that declares operator `kinds` (the physical ones), so a new
physical family is covered by the generic properties without editing this file.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from survey.perturb import family_names, make_family
from survey.perturb.jitter import project
from survey.perturb.motion import acquired_lines, rotate, translate
from survey.physics import make_physics
from survey.physics.fastmri_masks import make_fastmri_mask
from survey.physics.pmri import ParallelMRI

SIZE = 16
PHYSICS = {
    "mri": dict(size=SIZE, ratio=0.4, mask="gaussian-lines"),
    "pmri": dict(size=SIZE, ratio=0.4, coils=3),
    "radon": dict(size=SIZE, views=8),
}
#: The physical families: those that declare the operator kinds they model (noise families: tests/test_perturb.py).
PHYSICAL = sorted(name for name in family_names() if make_family(name).kinds is not None
                  and name not in ("gaussian", "poisson", "sphere"))
#: Each family's own example severity (`Family.example_severity`), in its unit.
SEVERITY = {name: make_family(name).example_severity for name in PHYSICAL}


@pytest.fixture(scope="module")
def operators():
    return {kind: make_physics(kind, **params) for kind, params in PHYSICS.items()}


def objects(count: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((count, 1, SIZE, SIZE), generator=gen, dtype=torch.float64)
    x = nn.functional.avg_pool2d(x, 3, 1, 1)
    border = torch.zeros(SIZE, SIZE, dtype=torch.float64)
    border[3:-3, 3:-3] = 1.0   # an object inside the field of view, as a patient is
    return x * border


def latents(family, physics, count: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((count, *family.latent_shape(physics)), generator=gen, dtype=torch.float64)


def pairs():
    for name in PHYSICAL:
        for kind in PHYSICS:
            if kind in make_family(name).kinds:
                yield name, kind


def test_every_physical_family_is_registered_with_kinds_and_a_unit():
    assert {"motion", "coil", "off-resonance", "spike", "rings", "view-jitter"} <= set(PHYSICAL)
    for name in set(family_names()) - {"gaussian", "poisson", "sphere"}:  # noise families: tests/test_perturb.py
        family = make_family(name)
        if family.kinds is not None:
            assert family.example_severity is not None, f"{name}: declare example_severity on the Family"
            assert family.severity_unit and family.identity_severity == 0.0


@pytest.mark.parametrize("name,kind", list(pairs()))
def test_identity_determinism_batching(name, kind, operators):
    """Severity 0 gives y exactly; deterministic in (y, z, severity, x); a batch = one draw at a time; one y
    against a batch of latents; per-draw severities."""
    physics, family = operators[kind], make_family(name)
    x = objects()
    y = physics.A(x)
    z = latents(family, physics, 3)
    sev = SEVERITY[name]
    assert torch.equal(family.perturb(y, z, 0.0, physics, x=x), y)
    assert torch.equal(family.perturb(y, z, torch.zeros(3, dtype=torch.float64), physics, x=x), y)
    first = family.perturb(y, z, sev, physics, x=x)
    assert first.shape == y.shape and first.dtype == y.dtype
    assert not torch.equal(first, y)
    assert torch.equal(first, family.perturb(y.clone(), z.clone(), sev, physics, x=x.clone()))
    single = torch.cat([family.perturb(y[i:i + 1], z[i:i + 1], sev, physics, x=x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(first, single, rtol=0, atol=1e-12)
    one = family.perturb(y[:1], z, sev, physics, x=x[:1])
    torch.testing.assert_close(one, torch.cat([family.perturb(y[:1], z[i:i + 1], sev, physics, x=x[:1])
                                               for i in range(3)]), rtol=0, atol=1e-12)
    mixed = family.perturb(y, z, torch.tensor([0.0, sev, 2 * sev], dtype=torch.float64), physics, x=x)
    assert torch.equal(mixed[0], y[0])
    torch.testing.assert_close(mixed[1], first[1], rtol=0, atol=1e-12)
    # float32 measurements stay float32 (complex64)
    y32 = physics.A(x.float())
    assert family.perturb(y32, z, sev, physics, x=x.float()).dtype == y32.dtype
    if family.needs_image:
        with pytest.raises(ValueError, match="needs the object x"):
            family.perturb(y, z, sev, physics)


def test_motion_constant_integer_shift_is_the_shifted_image(operators):
    """One constant integer-pixel shift for every line equals the measurements of the shifted image."""
    family = make_family("motion", rotation_per_pixel=0.0)
    x = objects()
    for kind in ("mri", "pmri"):
        physics = operators[kind]
        y = physics.A(x)
        for coordinate, shift, dims in ((0, 2, -2), (1, -3, -1)):
            z = torch.zeros((3, *family.latent_shape(physics)), dtype=torch.float64)
            z[:, coordinate * family.modes] = math.copysign(1.0, shift)   # mode 0: a constant path
            out = family.perturb(y, z, abs(shift), physics, x=x)
            torch.testing.assert_close(out, physics.A(torch.roll(x, shift, dims=dims)), rtol=0, atol=1e-5)
            assert float((out - physics.A(torch.roll(x, shift, dims=dims))).abs().max()) < 1e-12


def test_motion_trajectory_has_the_severity(operators):
    """RMS displacement over the acquired lines = severity (px, or mm through fov_mm); RMS rotation =
    rotation_per_pixel x displacement; one pose per shot; smooth (low-order) paths."""
    physics = operators["pmri"]
    family = make_family("motion", rotation_per_pixel=2.0, lines_per_shot=2)
    z = latents(family, physics, 4)
    rows, shifts, angles = family.trajectory(z, torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64), physics)
    assert rows.numel() == int(physics.sampling.any(dim=1).sum())
    torch.testing.assert_close(shifts.square().sum(-1).mean(1).sqrt(), torch.tensor([0.5, 1.0, 2.0, 3.0],
                                                                                     dtype=torch.float64))
    torch.testing.assert_close(angles.square().mean(1).sqrt(), torch.tensor([1.0, 2.0, 4.0, 6.0], dtype=torch.float64))
    torch.testing.assert_close(shifts[:, 0::2], shifts[:, 1::2][:, :shifts[:, 0::2].shape[1]])  # shots of 2 lines
    mm = make_family("motion", fov_mm=SIZE * 2.0)   # 2 mm pixels: 1 mm is half a pixel
    assert mm.severity_unit == "mm"
    _, shifts_mm, _ = mm.trajectory(z, 1.0, physics)
    torch.testing.assert_close(shifts_mm.square().sum(-1).mean(1).sqrt(), torch.full((4,), 0.5, dtype=torch.float64))
    # acquisition order: signed k_y increasing
    ky = torch.where(rows >= SIZE // 2, rows - SIZE, rows)
    assert bool((ky.diff() > 0).all())
    assert acquired_lines(physics.sampling).tolist() == rows.tolist()


def column_operators():
    """fastMRI's equispaced column masks at acceleration 4: the phase-encode lines are k-space columns."""
    return {"mri": make_physics("mri", size=SIZE, mask="fastmri-equispaced", acceleration=4, seed=0),
            "pmri": ParallelMRI(make_fastmri_mask("fastmri-equispaced", SIZE, 4, seed=0), 3)}


@pytest.mark.parametrize("kind", ["mri", "pmri"])
def test_motion_on_column_masks_moves_each_sampled_column_with_its_own_pose(kind, operators):
    """With fastMRI's masks the lines are columns (line_axis -1): each sampled column of the perturbed data is
    that column of the data of the object moved with that line's own pose (the first version read rows as
    lines whatever the mask, so every column mixed the poses of all n rows)."""
    physics = column_operators()[kind]
    assert physics.line_axis == -1 and operators[kind].line_axis == -2
    family = make_family("motion", rotation_per_pixel=0.0)
    x = objects(1)
    z = latents(family, physics, 1)
    out = family.perturb(physics.A(x), z, 1.5, physics, x=x)
    lines, shifts, _ = family.trajectory(z, 1.5, physics)   # in the transposed frame: (along readout, along lines)
    assert sorted(lines.tolist()) == physics.sampling.any(dim=0).nonzero().squeeze(1).tolist()
    for i, column in enumerate(lines.tolist()):
        moved = translate(x[:, 0].to(torch.complex128), shifts[:, i, 1], shifts[:, i, 0])   # original frame
        expected = physics.A(moved.unsqueeze(1))
        torch.testing.assert_close(out[..., column], expected[..., column], rtol=0, atol=1e-10)
    assert float(out[..., ~physics.sampling.any(dim=0)].abs().max()) == 0.0


def test_off_resonance_on_column_masks_shifts_along_the_rows():
    """A constant off-resonance of one cycle shifts the image one pixel along the readout, which for
    fastMRI's column masks runs along the rows."""
    physics, family = column_operators()["mri"], make_family("off-resonance")
    x = objects(1)
    z = torch.zeros((1, *family.latent_shape(physics)), dtype=torch.float64)
    z[0, 0] = 1.0
    torch.testing.assert_close(family.perturb(physics.A(x), z, 1.0, physics, x=x),
                               physics.A(torch.roll(x, 1, dims=-2)), rtol=0, atol=1e-12)


def test_rotation_by_shears():
    """Three FFT shears: a quarter turn of an image is the exact rotation (rot90) about pixel n // 2; small
    angles nearly compose; angle 0 is the identity to round-off."""
    x = objects(2).to(torch.complex128)[:, 0]
    quarter = rotate(x, torch.full((2,), math.pi / 2, dtype=torch.float64))
    # (r, c) -> (c, 2 c0 - r) about c0 = n // 2: torch.rot90 turns about the array centre (n - 1) / 2, so
    # one column of roll recentres it (the shears are integer here: an exact permutation of the pixels)
    expected = torch.roll(torch.rot90(x, -1, dims=(-2, -1)), shifts=1, dims=-1)
    torch.testing.assert_close(quarter, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(rotate(x, torch.zeros(2, dtype=torch.float64)), x, rtol=0, atol=1e-12)
    small = rotate(rotate(x, torch.full((2,), 0.05, dtype=torch.float64)), torch.full((2,), 0.05, dtype=torch.float64))
    once = rotate(x, torch.full((2,), 0.1, dtype=torch.float64))
    # band-limited shears compose only approximately (periodic wrap, the Nyquist column): within 3% of the peak
    assert float((small - once).abs().max()) < 0.03 * float(x.abs().max())


def test_coil_error_zero_reproduces_data_and_matches_perturbed_maps(operators):
    """Coil error 0 reproduces the pmri data; otherwise y' = A' x with the perturbed maps S' = S + delta,
    whose relative RMS error is the severity."""
    physics, family = operators["pmri"], make_family("coil")
    x = objects()
    y = physics.A(x)
    z = latents(family, physics, 3)
    assert torch.equal(family.perturb(y, z, 0.0, physics, x=x), y)
    delta = family.map_error(z, 0.05, physics)
    maps = physics.sensitivities.to(torch.complex128)
    torch.testing.assert_close(delta.reshape(3, -1).norm(dim=1) / maps.norm(), torch.full((3,), 0.05,
                                                                                        dtype=torch.float64))
    data = torch.fft.fft2((maps + delta) * x, norm="ortho") * physics.sampling
    torch.testing.assert_close(family.perturb(y, z, 0.05, physics, x=x), data, rtol=0, atol=1e-12)


def test_off_resonance_by_direct_summation(operators):
    """Each k-space sample is the sum over pixels of x S e^{-2 pi i k.r / n} e^{-2 pi i phi(r) k_x / n}, peak |phi| =
    severity; a constant off-resonance shifts the image along the readout by phi pixels."""
    physics, family = operators["pmri"], make_family("off-resonance")
    x = objects(1)
    y = physics.A(x)
    z = latents(family, physics, 1)
    phi = family.field_map(z, 0.7, physics)
    assert abs(float(phi.abs().max()) - 0.7) < 1e-12
    n = SIZE
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    r = torch.arange(n, dtype=torch.float64)
    ky, kx = k[:, None, None, None], k[None, :, None, None]
    phase = -2 * math.pi * (ky * r[:, None] + kx * r[None, :] + phi[0] * kx) / n   # (ky, kx, row, col)
    coil = physics.sensitivities.to(torch.complex128) * x[0]
    direct = torch.einsum("cyx,abyx->cab", coil, torch.polar(torch.ones_like(phase), phase)) / n
    torch.testing.assert_close(family.perturb(y, z, 0.7, physics, x=x)[0], direct * physics.sampling,
                               rtol=0, atol=1e-12)
    # constant phi = 1 cycle: exp(-2 pi i k_x / n) is a shift of one pixel along the readout (columns)
    single = operators["mri"]
    y1 = single.A(x)
    z1 = torch.zeros((1, *family.latent_shape(single)), dtype=torch.float64)
    z1[0, 0] = 1.0
    torch.testing.assert_close(family.perturb(y1, z1, 1.0, single, x=x), single.A(torch.roll(x, 1, dims=-1)),
                               rtol=0, atol=1e-12)


def test_spike_amplitude_relative_to_centre(operators):
    for kind in ("mri", "pmri"):
        physics, family = operators[kind], make_family("spike", spikes=3)
        x = objects(2)
        y = physics.A(x)
        z = latents(family, physics, 2)
        out = family.perturb(y, z, 0.2, physics)
        changed = (out - y).reshape(2, -1)
        centre = y[..., 0, 0].abs().reshape(2, -1).amax(dim=1)
        index, _ = family.locations(z, physics)
        for b in range(2):
            hit = changed[b].abs() > 0
            assert set(hit.nonzero().squeeze(1).tolist()) <= set(index[b].tolist())
            assert bool(physics.sampling.reshape(-1).repeat(y.shape[1])[hit].all())   # measured entries only
            if len(set(index[b].tolist())) == 3:
                torch.testing.assert_close(changed[b][hit].abs(), torch.full((3,), 0.2 * float(centre[b]),
                                                                             dtype=torch.float64))
    assert make_family("spike").differentiable is False


def test_rings_constant_along_views_with_rms_gain(operators):
    physics, family = operators["radon"], make_family("rings")
    x = objects()
    y = physics.A(x)
    z = latents(family, physics, 3)
    out = family.perturb(y, z, 2.0, physics)
    diff = out - y
    torch.testing.assert_close(diff, diff[:, :, :1].expand_as(diff), rtol=0, atol=1e-12)  # constant along views
    gains = torch.exp(-diff[:, 0, 0])
    torch.testing.assert_close((gains - 1).square().mean(1).sqrt(), torch.full((3,), 0.02, dtype=torch.float64))


def test_view_jitter_projector_and_physics(operators):
    """The torch projector is the operator's A at the nominal angles; a view's angle error equals the
    projection at the shifted angle; a shift moves each view's projection along the detector by
    d_col cos - d_row sin."""
    physics, family = operators["radon"], make_family("view-jitter")
    x = objects()
    nominal = torch.as_tensor(physics.angles, dtype=torch.float64).expand(3, -1)
    zero = torch.zeros_like(nominal)
    torch.testing.assert_close(project(x, nominal, zero, zero, physics.detectors), physics.A(x), rtol=0, atol=1e-10)
    z = latents(family, physics, 3)
    errors, shifts = family.errors(z, 1.5, physics)
    torch.testing.assert_close(errors.square().mean(1).sqrt(), torch.full((3,), 1.5, dtype=torch.float64))
    torch.testing.assert_close(shifts.square().sum(-1).mean(1).sqrt(), torch.full((3,), 1.5, dtype=torch.float64))
    out = family.perturb(physics.A(x), z, 1.5, physics, x=x)
    torch.testing.assert_close(out, project(x, nominal + errors, shifts[..., 0], shifts[..., 1], physics.detectors),
                               rtol=0, atol=1e-10)
    # a quarter-turn error: view at 0 degrees sees what the nominal operator sees at 90
    quarter = make_physics("radon", size=SIZE, views=2)   # angles 0 and 90
    angles = torch.tensor([[90.0, 90.0]], dtype=torch.float64)
    proj = project(x[:1], angles, torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                   quarter.detectors)
    torch.testing.assert_close(proj[0, 0, 0], quarter.A(x[:1])[0, 0, 1], rtol=0, atol=1e-10)
    # an integer column shift of 2 at 0 degrees: the projection moves by 2 detector bins
    shifted = project(x[:1], torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64),
                      torch.full((1, 1), 2.0, dtype=torch.float64), physics.detectors)
    base = project(x[:1], torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64),
                   torch.zeros(1, 1, dtype=torch.float64), physics.detectors)
    torch.testing.assert_close(shifted[0, 0, 0, 2:], base[0, 0, 0, :-2], rtol=0, atol=1e-10)


def test_bad_parameters_are_refused():
    for name, params, match in (("motion", dict(modes=0), "modes"), ("motion", dict(fov_mm=-1.0), "fov_mm"),
                                ("motion", dict(rotation_per_pixel=-1.0), "rotation_per_pixel"),
                                ("coil", dict(modes=0), "modes"), ("spike", dict(spikes=0), "spikes"),
                                ("view-jitter", dict(shift_per_degree=-1.0), "shift_per_degree")):
        with pytest.raises(ValueError, match=match):
            make_family(name, **params)
    physics = make_physics("mri", size=SIZE, ratio=0.4)
    with pytest.raises(ValueError, match="severity"):
        make_family("spike").perturb(physics.A(objects(1)), torch.zeros(1, 6, dtype=torch.float64), -1.0, physics)
