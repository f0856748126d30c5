"""The compressed-sensing reference: wavelet transform, TV operators, FISTA solver, tuning."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import pywt
import torch

from survey.data import load_dataset
from survey.metrics import psnr
from survey.physics import make_physics
from survey.solvers import tv
from survey.physics.mri import MRI
from survey.solvers.cs import CSReconstructor, make_reference
from survey.solvers.tuning import format_table, tune
from survey.solvers.wavelets import Wavelet2D


def phantoms(n: int, count: int = 3, seed: int = 0) -> torch.Tensor:
    """(count, 1, n, n) float32 in [0, 1]: smooth-edged random ellipses on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    out = []
    for _ in range(count):
        img = np.zeros((n, n))
        for _ in range(7):
            cx, cy = rng.uniform(-0.45, 0.45, 2)
            a, b = rng.uniform(0.1, 0.5, 2)
            theta, value = rng.uniform(0, np.pi), rng.uniform(0.1, 0.6)
            u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
            v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
            img += value * ((u / a) ** 2 + (v / b) ** 2 <= 1)
        img += 0.05 * np.sin(3 * xx + 2 * yy)  # a smooth shading, so not purely piecewise constant
        img -= img.min()
        out.append(img / img.max())
    return torch.tensor(np.stack(out)[:, None], dtype=torch.float32)


def brain_slices(count: int = 3) -> torch.Tensor:
    """`count` 64 x 64 test slices of the real brain template, spread over the volume."""
    images = load_dataset("brain", split="test", size=64).images
    step = len(images) // (count + 1)
    return images[step::step][:count]


# ---------------------------------------------------------------- wavelets


@pytest.mark.parametrize("wavelet,levels", [("haar", 2), ("db2", 3), ("db4", 2), ("sym4", 3)])
def test_wavelet_matches_pywavelets_periodization(wavelet, levels):
    x = torch.randn(2, 1, 32, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    coeffs = Wavelet2D(wavelet, levels)(x)
    for b in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pywt warns that deep levels see the boundary
            ref = pywt.wavedec2(x[b, 0].numpy(), wavelet, mode="periodization", level=levels)
        expected, _ = pywt.coeffs_to_array(ref)
        np.testing.assert_allclose(coeffs[b, 0].numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("wavelet,levels", [("db2", 3), ("db4", 4), ("haar", 1)])
def test_wavelet_is_orthogonal(wavelet, levels):
    g = torch.Generator().manual_seed(2)
    W = Wavelet2D(wavelet, levels)
    x = torch.randn(3, 1, 32, 32, dtype=torch.float64, generator=g)
    c = torch.randn(3, 1, 32, 32, dtype=torch.float64, generator=g)
    assert torch.allclose(W.inverse(W(x)), x, atol=1e-12)
    assert torch.allclose(W(W.inverse(c)), c, atol=1e-12)
    assert abs(float(W(x).norm() / x.norm()) - 1) < 1e-6
    assert abs(float((W(x) * c).sum() - (x * W.adjoint(c)).sum())) < 1e-9


def test_wavelet_complex_float32_and_errors():
    W = Wavelet2D("db2", 3)
    z = torch.randn(2, 1, 16, 16, dtype=torch.complex64)
    cz = W(z)
    assert cz.dtype == torch.complex64
    assert torch.allclose(cz.real, W(z.real)) and torch.allclose(cz.imag, W(z.imag))
    assert (W.inverse(cz) - z).abs().max() < 1e-5
    with pytest.raises(ValueError, match="divisible by 2\\^levels = 8"):
        W(torch.zeros(1, 1, 20, 20))
    with pytest.raises(ValueError, match="not orthogonal"):
        Wavelet2D("bior2.2", 2)
    with pytest.raises(ValueError, match="positive integer"):
        Wavelet2D("db2", 0)


# ---------------------------------------------------------------- total variation


def test_tv_gradient_adjoint_and_values():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 12, 9, dtype=torch.float64, generator=g)
    p = torch.randn(2, 1, 2, 12, 9, dtype=torch.float64, generator=g)
    assert abs(float((tv.gradient(x) * p).sum() - (x * tv.gradient_adjoint(p)).sum())) < 1e-10
    # ||D||^2 <= 8 (the constant the step size relies on): power iteration on D^T D.
    v = x
    for _ in range(200):
        v = tv.gradient_adjoint(tv.gradient(v))
        v = v / v.norm()
    assert float(tv.gradient(v).norm() ** 2) <= tv.GRADIENT_NORM_SQUARED
    step = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    step[..., 4:] = 0.5
    assert torch.allclose(tv.total_variation(step), torch.tensor([0.5 * 8], dtype=torch.float64))
    assert float(tv.total_variation(torch.ones(1, 1, 8, 8))) == 0.0
    assert abs(float(tv.smoothed_tv(step, 1e-8) - tv.total_variation(step))) < 1e-6


def test_smoothed_tv_grad_equals_autograd():
    x = torch.randn(2, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    tv.smoothed_tv(x, 0.05).sum().backward()
    assert torch.allclose(tv.smoothed_tv_grad(x.detach(), 0.05), x.grad, atol=1e-12)


# ---------------------------------------------------------------- the solver


def _gain(kind: str, x: torch.Tensor, y: torch.Tensor, physics) -> tuple[float, float]:
    solver = make_reference(physics)
    h = physics.H(y)
    h = h.real if torch.is_complex(h) else h
    out = solver(y, physics)
    assert out.shape == x.shape and out.dtype == x.dtype and not torch.is_complex(out)
    cs_db, h_db = float(psnr(out, x).mean()), float(psnr(h, x).mean())
    print(f"{kind}: CS {cs_db:.2f} dB vs H {h_db:.2f} dB")
    return cs_db, h_db


def test_cs_beats_zero_filling_mri():
    physics = make_physics("mri", size=64, ratio=0.25, mask="gaussian-lines", seed=0)
    x = brain_slices()
    cs_db, h_db = _gain("mri", x, physics.A(x), physics)
    assert cs_db >= h_db + 1.0


def test_cs_beats_filtered_back_projection_radon():
    physics = make_physics("radon", size=64, views=50)
    x = brain_slices()
    cs_db, h_db = _gain("radon", x, physics.A(x), physics)
    assert cs_db >= h_db + 1.0


def test_cs_beats_zero_filling_pmri():
    physics = make_physics("pmri", size=64, ratio=0.15, mask="uniform-lines", coils=8)
    x = brain_slices()
    cs_db, h_db = _gain("pmri", x, physics.A(x), physics)
    assert cs_db >= h_db + 1.0


def test_cs_denoises():
    physics = make_physics("denoise", size=64, sigma=25 / 255)
    x = brain_slices()
    y = physics.noisy(x, torch.Generator().manual_seed(4))
    cs_db, h_db = _gain("denoise", x, y, physics)
    assert cs_db >= h_db + 1.0


@pytest.mark.slow   # the reference on six Radon view counts of real slices (~8 s)
def test_weights_fixed_at_the_training_operator_let_the_reference_use_more_views():
    """Weights relative to each operator's own ||A||^2 grow with the view count, and the reference stagnates
    (35.1 dB at 90 and 180 views); fixed at the 50-view operator, more views mean more data (41 dB at 180)."""
    x = brain_slices()
    train = make_physics("radon", size=64, views=50)
    relative = make_reference(train)
    fixed = relative.weights_fixed_at(train)
    y = train.A(x)
    assert torch.equal(fixed(y, train), relative(y, train))  # the same solver on its own operator
    many = make_physics("radon", size=64, views=180)
    y = many.A(x)
    out = fixed(y, many)
    assert float(psnr(out, x).mean()) > float(psnr(relative(y, many), x).mean()) + 3
    assert float(psnr(out, x).mean()) > float(psnr(fixed(train.A(x), train), x).mean()) + 3
    h = many.H(y)
    assert bool((fixed.objective(out, y, many) < fixed.objective(h, y, many)).all())  # the step still converges


def test_cs_decreases_objective_and_is_batch_independent():
    physics = make_physics("mri", size=32, ratio=0.3, mask="gaussian-lines", seed=1)
    x = phantoms(32, count=3, seed=5).double()
    y = physics.A(x)
    solver = make_reference(physics, iterations=60)
    out = solver(y, physics)
    assert out.dtype == torch.float64
    h = physics.H(y).real
    assert bool((solver.objective(out, y, physics) < solver.objective(h, y, physics)).all())
    single = torch.cat([solver(y[i:i + 1], physics) for i in range(3)])
    assert torch.allclose(out, single, atol=1e-10)


def test_default_mode_keeps_no_graph_and_unrolled_is_differentiable():
    physics = make_physics("mri", size=16, ratio=0.4, mask="gaussian-lines", seed=2)
    x = phantoms(16, count=1, seed=6).double()
    y = physics.A(x).detach().requires_grad_(True)
    assert not make_reference(physics, iterations=5)(y, physics).requires_grad

    solver = make_reference(physics, iterations=15, unrolled=True)
    direction = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(7))
    weights = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(8))

    def loss(meas: torch.Tensor) -> torch.Tensor:
        return (solver(meas, physics) * weights).sum()

    (grad,) = torch.autograd.grad(loss(y), y)
    assert grad.shape == y.shape and bool(torch.isfinite(torch.view_as_real(grad)).all())
    assert float(grad.abs().max()) > 0
    h = 1e-6
    with torch.no_grad():
        numeric = (loss(y + h * direction) - loss(y - h * direction)) / (2 * h)
    # For a real loss of complex y, torch's gradient is dL/dRe + i dL/dIm.
    analytic = (grad.conj() * direction).real.sum()
    assert abs(float(analytic - numeric)) <= 1e-5 * max(1.0, abs(float(numeric)))


def test_solver_survives_pickling_after_use():
    physics = make_physics("mri", size=16, ratio=0.4, mask="gaussian-lines", seed=2)
    y = physics.A(phantoms(16, count=2, seed=10))
    solver = make_reference(physics, iterations=10)
    out = solver(y, physics)  # fills the operator-norm cache
    for clone in (pickle.loads(pickle.dumps(solver)), copy.deepcopy(solver)):
        assert clone.params == solver.params
        assert torch.equal(clone(y, physics), out)


def test_make_reference_defaults_and_validation():
    physics = make_physics("mri", size=32, ratio=0.25, mask="gaussian-lines", seed=0)
    solver = make_reference(physics, iterations=7)
    assert solver.params == {**MRI.reference_defaults, "iterations": 7}
    with pytest.raises(ValueError, match="unknown parameter"):
        make_reference(physics, lambda_w=1.0)
    with pytest.raises(ValueError, match="lam_tv must be >= 0"):
        CSReconstructor(lam_w=0.0, lam_tv=-1.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        CSReconstructor(lam_w=0.0, lam_tv=0.0, eps=0.0)
    physics.reference_defaults = None  # an operator nobody tuned the reference for
    with pytest.raises(ValueError, match="no default CS parameters"):
        make_reference(physics)


def test_tune_ranks_grid_points():
    physics = make_physics("mri", size=32, ratio=0.3, mask="gaussian-lines", seed=0)
    x = phantoms(32, count=2, seed=9)
    best, rows = tune(physics, x, {"lam_tv": [0.0, 1e-3]}, base={**MRI.reference_defaults, "iterations": 40})
    assert len(rows) == 2 and rows[0]["psnr_mean"] >= rows[1]["psnr_mean"]
    assert best["lam_tv"] == rows[0]["lam_tv"] and best["iterations"] == 40
    assert "psnr_mean" in format_table(rows)
    with pytest.raises(ValueError, match="unknown grid parameter"):
        tune(physics, x, {"mu": [1.0]})
