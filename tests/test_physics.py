"""Every registered operator: adjointness, shapes, batching, dtypes, norm, gradients, devices.

Registry-driven: parametrised over `physics_kinds()`, so a newly registered operator is tested
without editing this file (it is built with `make_physics(kind, size=size)` unless `FACTORIES`
names smaller parameters). Then operator-specific checks for mri, pmri and denoise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from survey.physics import make_physics, physics_kinds
from survey.physics.denoise import Denoise
from survey.physics.masks import MASK_KINDS, make_mask
from survey.physics.mri import MRI
from survey.physics.pmri import ParallelMRI, coil_sensitivities

FACTORIES = {
    "mri": lambda size: make_physics("mri", size=size, ratio=0.3, mask="gaussian-lines", seed=1),
    "pmri": lambda size: make_physics("pmri", size=size, ratio=0.3, mask="uniform-lines", seed=1, coils=4),
    "denoise": lambda size: make_physics("denoise", size=size, sigma=0.1),
}
SIZES = [16, 17, 32]
KINDS = physics_kinds()


def build(kind: str, size: int):
    try:
        return FACTORIES.get(kind, lambda n: make_physics(kind, size=n))(size)
    except ModuleNotFoundError as error:
        if error.name == f"survey.physics.{kind}":
            pytest.skip(f"{kind}: its module is not written yet")
        raise


def inner(a: torch.Tensor, b: torch.Tensor) -> float:
    """Real inner product Re <a, b> of two tensors of the same shape."""
    return float(torch.real(torch.sum(torch.conj(a) * b)) if (a.is_complex() or b.is_complex()) else torch.sum(a * b))


def random_measurement(physics, batch: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    shape = (batch, *physics.measurement_shape)
    if physics.complex_measurements:
        return torch.randn(shape, generator=generator, dtype=torch.complex128).to(dtype)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def takes_complex_images(physics) -> bool:
    return physics.complex_measurements or isinstance(physics, Denoise)


def test_every_registered_kind_is_known():
    assert {"mri", "pmri", "denoise", "radon"} <= set(KINDS)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("image", ["real", "complex"])
def test_adjointness(kind, size, image):
    physics = build(kind, size)
    if image == "complex" and not takes_complex_images(physics):
        pytest.skip(f"{kind} measures real images only")
    g = torch.Generator().manual_seed(size)
    x_dtype = torch.float64 if image == "real" else torch.complex128
    x = torch.randn((2, *physics.image_shape), generator=g, dtype=x_dtype)
    y = random_measurement(physics, 2, torch.complex128 if physics.complex_measurements else torch.float64, g)
    ax = physics.A(x)
    aty = physics.A_adjoint(y)
    assert ax.shape == y.shape and aty.shape == x.shape
    gap = abs(inner(ax, y) - inner(x, aty))
    assert gap <= 1e-6 * float(ax.norm()) * float(y.norm()), gap


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_batching(kind):
    physics = build(kind, 17)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((3, *physics.image_shape), generator=g, dtype=torch.float64)
    y = physics.A(x)
    assert tuple(y.shape) == (3, *physics.measurement_shape)
    assert torch.allclose(y, torch.cat([physics.A(x[i:i + 1]) for i in range(3)]), atol=1e-12)
    back = physics.A_adjoint(y)
    assert tuple(back.shape) == (3, *physics.image_shape)
    assert torch.allclose(back, torch.cat([physics.A_adjoint(y[i:i + 1]) for i in range(3)]), atol=1e-12)
    assert tuple(physics.H(y).shape) == (3, *physics.image_shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("precision", ["single", "double"])
def test_dtype_follows_the_input(kind, precision):
    physics = build(kind, 16)
    real, cplx = (torch.float32, torch.complex64) if precision == "single" else (torch.float64, torch.complex128)
    x = torch.rand((1, *physics.image_shape), dtype=real)
    y = physics.A(x)
    assert y.dtype == (cplx if physics.complex_measurements else real)
    assert physics.A_adjoint(y).dtype == (cplx if physics.complex_measurements else real)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_module_to_dtype_keeps_the_operator(kind, dtype):
    reference = build(kind, 16)
    moved = build(kind, 16).to(dtype)
    x = torch.rand((1, *reference.image_shape), dtype=dtype, generator=torch.Generator().manual_seed(1))
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert torch.allclose(moved.A(x), reference.A(x), atol=tol, rtol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_of_the_forward_matches_the_adjoint(kind):
    # Attacks differentiate through A: d/dx 1/2 ||A x||^2 = Re A* A x for real x.
    physics = build(kind, 16)
    x = torch.rand((2, *physics.image_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x.requires_grad_(True)
    (0.5 * physics.A(x).abs().square().sum()).backward()
    expected = physics.A_adjoint(physics.A(x.detach()))
    expected = expected.real if expected.is_complex() else expected
    assert torch.allclose(x.grad, expected, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_norm_bounds_the_gain(kind):
    physics = build(kind, 16)
    norm = physics.norm(generator=torch.Generator().manual_seed(0))
    assert np.isfinite(norm) and norm > 0
    x = torch.randn((8, *physics.image_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    gains = physics.A(x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert float(gains.max()) <= norm * (1 + 1e-4)


@pytest.mark.parametrize("kind, params, expected", [
    ("mri", dict(ratio=0.25, mask="gaussian-lines"), 1.0),
    ("mri", dict(ratio=0.1, mask="radial"), 1.0),
    ("pmri", dict(ratio=1.0, coils=5), 1.0),
    ("denoise", dict(), 1.0),
])
def test_norm_known_values(kind, params, expected):
    physics = make_physics(kind, size=32, **params)
    assert physics.norm(generator=torch.Generator().manual_seed(0)) == pytest.approx(expected, abs=1e-4)


def test_subsampled_parallel_mri_norm_is_at_most_one():
    physics = make_physics("pmri", size=32, ratio=0.2, coils=4)
    assert 0.5 < physics.norm(generator=torch.Generator().manual_seed(0)) <= 1 + 1e-6


# --- Fourier operators ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 17, 32])
@pytest.mark.parametrize("kind", ["mri", "pmri"])
@pytest.mark.parametrize("mask", MASK_KINDS)
def test_full_sampling_is_inverted_by_H(kind, size, mask):
    physics = make_physics(kind, size=size, ratio=1.0, mask=mask)
    g = torch.Generator().manual_seed(size)
    x = torch.randn((2, 1, size, size), generator=g, dtype=torch.complex128)
    assert torch.allclose(physics.H(physics.A(x)), x, atol=1e-6)
    real = x.real.contiguous()
    assert torch.allclose(physics.H(physics.A(real)).real, real, atol=1e-6)


@pytest.mark.parametrize("size", [16, 17])
def test_mri_matches_the_numpy_dft_with_the_centred_mask(size):
    physics = make_physics("mri", size=size, ratio=0.4, mask="random-points", seed=4)
    x = torch.randn((1, 1, size, size), dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    mask = physics.mask.numpy()
    expected = np.fft.ifftshift(mask) * np.fft.fft2(x[0, 0].numpy(), norm="ortho")
    assert np.allclose(physics.A(x)[0, 0].numpy(), expected, atol=1e-12)
    assert torch.equal(physics.mask, make_mask("random-points", size, 0.4, seed=4))


@pytest.mark.parametrize("size", [16, 17])
def test_centre_of_the_mask_is_the_dc_sample(size):
    centre_only = torch.zeros(size, size, dtype=torch.bool)
    centre_only[size // 2, size // 2] = True
    physics = MRI(centre_only)
    flat = torch.full((1, 1, size, size), 2.0, dtype=torch.float64)
    k = physics.A(flat)
    assert k[0, 0, 0, 0].real == pytest.approx(2.0 * size)  # orthonormal DFT: DC = sum / n
    assert float(k.abs().sum()) == pytest.approx(2.0 * size)
    assert torch.allclose(physics.H(k).real, flat)  # a constant image lives only at DC


def test_measurements_vanish_off_the_mask():
    physics = make_physics("pmri", size=32, ratio=0.25, mask="gaussian-lines", coils=3)
    y = physics.A(torch.rand(2, 1, 32, 32, dtype=torch.float64))
    assert float(y[..., ~physics.sampling].abs().max()) == 0.0
    assert float(y[..., physics.sampling].abs().min()) > 0.0


def test_half_precision_inputs_compute_in_single():
    physics = make_physics("mri", size=16)
    assert physics.A(torch.rand(1, 1, 16, 16, dtype=torch.float16)).dtype == torch.complex64
    assert physics.A(torch.rand(1, 1, 16, 16, dtype=torch.bfloat16)).dtype == torch.complex64


def test_describe_reports_the_sampling():
    physics = make_physics("mri", size=64, ratio=0.25, mask="gaussian-lines", seed=3)
    facts = physics.describe()
    assert facts == {"kind": "mri", "size": 64, "ratio": 0.25, "mask": "gaussian-lines", "seed": 3,
                     "center_fraction": 0.125}
    parallel = make_physics("pmri", size=32, ratio=0.15, coils=6, seed=2).describe()
    assert parallel["kind"] == "pmri" and parallel["coils"] == 6 and parallel["mask"] == "uniform-lines"
    assert parallel["ratio"] == pytest.approx(5 / 32, abs=1e-4)  # 15% of 32 lines = 4.8 -> 5 lines
    assert make_physics("denoise", size=8, sigma=0.2).describe() == {"kind": "denoise", "size": 8, "sigma": 0.2}


@pytest.mark.parametrize("kind", ["mri", "pmri"])
def test_at_ratio_gives_nested_operators(kind):
    physics = make_physics(kind, size=32, ratio=0.2, mask="poisson-disc", seed=9)
    denser = physics.at_ratio(0.5)
    assert type(denser) is type(physics) and denser.describe()["seed"] == 9
    assert denser.ratio == pytest.approx(0.5, abs=1 / 32**2)
    assert not bool((physics.mask & ~denser.mask).any())
    custom = physics.with_mask(torch.ones(32, 32, dtype=torch.bool))
    assert custom.ratio == 1.0 and custom.describe()["mask"] == "custom"
    with pytest.raises(ValueError, match="custom"):
        custom.at_ratio(0.3)


def test_mask_buffer_moves_with_the_module_and_survives_to_dtype():
    physics = make_physics("mri", size=16).to(torch.float64)
    assert dict(physics.named_buffers())["sampling"].dtype == torch.bool
    assert "sampling" in physics.state_dict()


# --- parallel MRI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size, coils", [(17, 1), (32, 8), (24, 15)])
def test_sensitivities_are_smooth_normalised_and_distinct(size, coils):
    maps = coil_sensitivities(size, coils)
    assert maps.shape == (coils, size, size) and maps.dtype == torch.complex128
    assert torch.allclose(maps.abs().square().sum(dim=0), torch.ones(size, size, dtype=torch.float64), atol=1e-12)
    step = (maps[:, 1:, :] - maps[:, :-1, :]).abs().max()
    assert float(step) < 0.5, "neighbouring pixels must have similar sensitivities"
    if coils > 1:
        assert float((maps[0].abs() - maps[1].abs()).abs().max()) > 0.1
    physics = ParallelMRI(torch.ones(size, size, dtype=torch.bool), coils)
    assert torch.allclose(physics.sensitivities, maps)


def test_parallel_adjoint_is_the_coil_combination_of_zero_filled_images():
    physics = make_physics("pmri", size=16, ratio=0.3, coils=3, seed=2)
    y = torch.randn((1, 3, 16, 16), dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    maps = physics.sensitivities
    expected = sum(maps[c].conj() * torch.fft.ifft2(physics.sampling * y[0, c], norm="ortho") for c in range(3))
    assert torch.allclose(physics.A_adjoint(y)[0, 0], expected, atol=1e-12)


def test_parallel_mri_single_precision_after_to_float32():
    physics = make_physics("pmri", size=16, coils=2).to(torch.float32)
    assert physics.sensitivity_maps.dtype == torch.float32
    sums = physics.sensitivities.abs().square().sum(dim=0)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
    assert physics.A(torch.rand(1, 1, 16, 16)).dtype == torch.complex64


# --- denoising ------------------------------------------------------------------------------------


def test_denoise_noise_is_seeded_and_has_the_requested_level():
    physics = make_physics("denoise", size=32, sigma=25 / 255)
    x = torch.rand(4, 1, 32, 32, dtype=torch.float64)
    first = physics.noisy(x, torch.Generator().manual_seed(1))
    assert torch.equal(first, physics.noisy(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, physics.noisy(x, torch.Generator().manual_seed(2)))
    assert float((first - x).std()) == pytest.approx(25 / 255, rel=0.05)
    assert torch.equal(make_physics("denoise", size=32, sigma=0.0).noisy(x), x)
    assert physics.A(x) is not x and torch.equal(physics.A(x), x)


def test_denoise_complex_noise_has_unit_power():
    physics = make_physics("denoise", size=32, sigma=0.5)
    x = torch.zeros(8, 1, 32, 32, dtype=torch.complex128)
    noise = physics.noisy(x, torch.Generator().manual_seed(0))
    assert float(noise.abs().square().mean()) == pytest.approx(0.25, rel=0.05)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, params, message", [
    ("mri", dict(ratio=0.0), "ratio"),
    ("mri", dict(ratio=1.5), "ratio"),
    ("mri", dict(mask="spiral"), "unknown mask kind"),
    ("mri", dict(size=3), "at least 4"),
    ("pmri", dict(coils=0), "coils"),
    ("pmri", dict(coils=2.5), "coils"),
    ("denoise", dict(sigma=-0.1), "sigma"),
    ("denoise", dict(sigma=float("inf")), "sigma"),
    ("tomosynthesis", dict(), "unknown physics kind"),
])
def test_bad_parameters_are_refused_clearly(kind, params, message):
    with pytest.raises(ValueError, match=message):
        make_physics(kind, **params)


@pytest.mark.parametrize("kind", ["mri", "pmri", "denoise"])
def test_wrongly_shaped_or_typed_inputs_are_refused(kind):
    physics = make_physics(kind, size=16)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        physics.A(torch.rand(1, 1, 16, 15))
    with pytest.raises(ValueError, match="floating-point or complex"):
        physics.A(torch.ones(1, 1, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="16, 16"):
        physics.A_adjoint(torch.rand(1, 2, 16, 16) if kind != "pmri" else torch.rand(1, 3, 16, 16))


def test_custom_masks_are_checked():
    with pytest.raises(ValueError, match="square"):
        MRI(torch.ones(8, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="samples nothing"):
        MRI(torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        MRI(torch.full((8, 8), 0.5))
    assert MRI(torch.ones(8, 8)).ratio == 1.0


# --- devices --------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", KINDS)
def test_operators_run_on_the_gpu_and_agree_with_the_cpu(kind):
    cpu = build(kind, 32)
    gpu = build(kind, 32).to("cuda")
    x = torch.rand((2, *cpu.image_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = gpu.A(x.cuda())
    assert y.device.type == "cuda"
    assert torch.allclose(y.cpu(), cpu.A(x), atol=1e-10)
    assert torch.allclose(gpu.A_adjoint(y).cpu(), cpu.A_adjoint(cpu.A(x)), atol=1e-10)
    assert gpu.norm(generator=torch.Generator().manual_seed(0)) == pytest.approx(
        cpu.norm(generator=torch.Generator().manual_seed(0)), rel=1e-4)
    if isinstance(cpu, Denoise):
        noisy = gpu.noisy(x.cuda(), torch.Generator().manual_seed(1))
        assert torch.allclose(noisy.cpu(), cpu.noisy(x, torch.Generator().manual_seed(1)))


# -- facts the tasks ask the operator for (instead of testing its kind) -------------------------------


def _old_attack_support(physics, y: torch.Tensor) -> torch.Tensor:
    """tasks.attack.measurement_support before the operators owned it: the non-zeros of A A* 1."""
    probe = physics.A_adjoint(torch.ones_like(y[:1]))
    reach = physics.A(probe.real if torch.is_complex(probe) and not torch.is_complex(y) else probe).abs()
    return reach > 1e-6 * reach.max()


def _old_ball_support(physics, y: torch.Tensor) -> torch.Tensor:
    """tasks.ball.measured_support before: the Fourier `sampling` buffer, else every entry."""
    sampling = getattr(physics, "sampling", None)
    return sampling.expand_as(y[:1]) if isinstance(sampling, torch.Tensor) else torch.ones_like(y[:1], dtype=torch.bool)


def _zoo_physics() -> list[dict]:
    import json
    from pathlib import Path

    weights = Path(__file__).parents[1] / "survey" / "nets" / "weights"
    cards = [json.loads(p.read_text()) for p in sorted(weights.glob("*.json"))]
    return [card["physics"] for card in cards if "physics" in card]  # companion models' cards name no operator


@pytest.mark.parametrize("size", [16, 17])
@pytest.mark.parametrize("kind", KINDS)
def test_measured_mask_is_the_one_definition_of_measured_entries(kind, size):
    physics = build(kind, size)
    mask = physics.measured_mask()
    assert mask.dtype == torch.bool and tuple(mask.shape) == (1, *physics.measurement_shape) and bool(mask.any())
    for dtype in (torch.float32, torch.float64):
        y = physics.A(torch.rand((2, *physics.image_shape), dtype=dtype, generator=torch.Generator().manual_seed(4)))
        assert torch.equal(mask, _old_attack_support(physics, y)), dtype
        # The ball's old rule kept every entry of operators without a k-space mask; the entries it kept
        # beyond the mask carry no signal: A reaches them with less than 1e-6 of its largest reach.
        old_ball = _old_ball_support(physics, y)
        assert not bool((mask & ~old_ball).any())
        probe = physics.A_adjoint(torch.ones_like(y[:1]))
        reach = physics.A(probe if physics.complex_measurements else probe.real).abs()
        assert float(torch.cat([reach[old_ball & ~mask], reach.new_zeros(1)]).max()) <= 1e-6 * float(reach.max())
    if hasattr(physics, "sampling"):  # Fourier: exactly the sampled k-space, as the ball had it
        assert torch.equal(mask, physics.sampling.expand_as(mask))


@pytest.mark.parametrize("params", _zoo_physics(), ids=lambda p: f"{p['kind']}-{p.get('views', p.get('ratio', ''))}")
def test_measured_mask_of_the_zoo_operators_equals_the_attacks_old_support(params):
    physics = make_physics(**params)
    y = physics.A(torch.rand((1, *physics.image_shape), generator=torch.Generator().manual_seed(5)))
    assert torch.equal(physics.measured_mask(), _old_attack_support(physics, y))


@pytest.mark.parametrize("kind", KINDS)
def test_operator_facts_for_the_attack_and_the_reference(kind):
    from survey.solvers import make_reference

    physics = build(kind, 16)
    assert physics.attack_gradient in ("adjoint", "fbp")
    assert physics.reference_defaults is not None, f"{kind}: no reference_defaults for the reference solver"
    solver = make_reference(physics, iterations=2)
    assert solver.params == {**physics.reference_defaults, "iterations": 2}
    y = physics.A(torch.rand((1, *physics.image_shape), dtype=torch.float64))
    assert solver(y, physics).shape == (1, *physics.image_shape)


@pytest.mark.parametrize("kind", KINDS)
def test_every_sweep_axis_moves_the_operator_and_comes_back(kind):
    physics = build(kind, 16)
    for axis in physics.sweep_axes:
        own = physics.level(axis.name)
        assert physics.same_level(axis.name, physics.at_level(axis.name, own))
        other = {"ratio": 0.6, "views": 9, "sigma": 0.05}.get(axis.name, own)
        moved = physics.at_level(axis.name, other)
        assert type(moved) is type(physics) and moved.size == physics.size
        assert moved.level(axis.name) == pytest.approx(other, abs=1.0 / 16)  # nested masks snap to whole lines
        assert isinstance(moved.level(axis.name), int) == axis.integer
        assert not physics.same_level(axis.name, moved)
        back = moved.at_level(axis.name, own)
        assert physics.same_level(axis.name, back)
    with pytest.raises(ValueError, match="no sweep axis"):
        physics.sweep_axis("no-such-axis")
