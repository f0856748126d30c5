"""The local Jacobian spectrum against exact answers: a linear convolutional network's dense SVD, Tikhonov's
closed form per frequency, H on a Fourier mask (ones, then zeros), AUTOMAP's dense autograd Jacobian, and
finite differences along v_1; the task's rows and tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from survey.nets.exact import IdentityNet, TikhonovNet
from survey.physics import make_physics
from survey.physics.mri import MRI
from survey.tasks import TaskContext, generator_for, make_task
from survey.tasks.spectrum import Linearisation, effective_rank, leading_directions, top_singular

N = 16


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class LinearConvNet(nn.Module):
    """f(y) = conv3(conv2(conv1(Re H y))): zero-padded, multi-channel, no bias, no activation (linear)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 5, padding=2, bias=False),
                                  nn.Conv2d(4, 1, 3, padding=1, bias=False)).double()

    def forward(self, y, physics):
        h = physics.H(y)
        return self.body(h.real if torch.is_complex(h) else h)


def dense_jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """The (n^2, n^2) Jacobian of r -> f(x + r) at one image, by autograd (the slow, exact check)."""
    jac = torch.autograd.functional.jacobian(lambda r: f(x + r.view_as(x)).reshape(-1), torch.zeros(x.numel(),
                                             dtype=x.dtype))
    return jac


def symmetric_mask(n: int, points) -> torch.Tensor:
    """Centred bool mask holding `points` (FFT-layout frequencies) and their negatives."""
    m = torch.zeros(n, n, dtype=torch.bool)
    for i, j in points:
        m[i % n, j % n] = True
        m[-i % n, -j % n] = True
    return torch.fft.fftshift(m)


def test_linear_convolutional_network_matches_the_dense_svd():
    physics = make_physics("denoise", size=N, sigma=0.1)
    net = LinearConvNet()
    x = torch.rand(2, 1, N, N, generator=gen(1), dtype=torch.float64)
    found = top_singular(net, physics, x, 5, iterations=120, tol=1e-8, generator=gen())
    dense = dense_jacobian(lambda u: net(u, physics), x[:1])
    u, s, vh = torch.linalg.svd(dense)
    for b in range(2):  # a linear network: the same spectrum at every image
        assert torch.allclose(found.sigma[b], s[:5], rtol=1e-4, atol=0), (found.sigma[b], s[:5])
        assert (found.residual[b] < 1e-6).all()
    # v_1 up to sign (sigma_1 is simple here)
    assert s[0] - s[1] > 1e-3 * s[0]
    cos = float((found.vectors[0, 0].reshape(-1) * vh[0]).sum())
    assert abs(cos) > 1 - 1e-6


def test_tikhonov_singular_values_follow_the_closed_form_per_frequency():
    mu = 0.3
    physics = make_physics("mri", size=N, ratio=0.3, mask="gaussian-lines", seed=0)
    x = torch.rand(1, 1, N, N, generator=gen(2), dtype=torch.float64)
    # image domain: L = (Re A*A + mu)^{-1} Re A*A, diagonal in k-space with d(k) = (P(k) + P(-k)) / 2
    p = physics.sampling.to(torch.float64)
    d = 0.5 * (p + torch.roll(torch.flip(p, (0, 1)), (1, 1), (0, 1)))
    expected = (d / (d + mu)).flatten().sort(descending=True).values
    k = int((d == 1).sum()) + 4  # every d = 1 frequency, then into the d = 1/2 ones
    found = top_singular(TikhonovNet(mu), physics, x, k, iterations=N * N, tol=1e-9, generator=gen())
    assert torch.allclose(found.sigma[0], expected[:k], rtol=1e-6, atol=1e-9), (found.sigma[0], expected[:k])
    assert (expected[:k] < expected[0]).any(), "the test should cross from d = 1 to d = 1/2 frequencies"
    # measurement domain on a conjugate-symmetric mask: sigma_i / (sigma_i^2 + mu) with sigma_i(A) = 1
    sym = MRI(symmetric_mask(N, [(0, 0), (0, 1), (1, 0), (2, 3), (5, 1)]))
    found = top_singular(TikhonovNet(mu), sym, x, 4, domain="measurement", iterations=60, tol=1e-9, generator=gen())
    assert torch.allclose(found.sigma[0], torch.full((4,), 1 / (1 + mu), dtype=torch.float64), rtol=1e-6)


def test_h_on_a_fourier_mask_has_ones_up_to_the_sampled_count_then_zeros():
    mask = symmetric_mask(N, [(0, 0), (0, 1), (1, 0), (2, 3), (0, N // 2)])
    physics = MRI(mask)
    sampled = int(mask.sum())  # 1 (DC) + 2 + 2 + 2 + 1 (self-conjugate Nyquist) = 8
    assert sampled == 8
    x = torch.rand(2, 1, N, N, generator=gen(3), dtype=torch.float64)
    found = top_singular(IdentityNet(), physics, x, sampled + 4, iterations=60, tol=1e-10, generator=gen())
    ones, zeros = found.sigma[:, :sampled], found.sigma[:, sampled:]
    assert torch.allclose(ones, torch.ones_like(ones), atol=1e-10), found.sigma
    assert (zeros < 1e-6).all(), found.sigma
    assert torch.isnan(found.residual[:, sampled:]).all() and (found.residual[:, :sampled] < 1e-8).all()


def test_identity_in_float32_has_every_singular_value_one():
    """H of a denoiser is the identity: every sigma is 1. In float32 the Krylov space is invariant from the
    first block and what is left after projecting is rounding; the first version took that for new
    directions and reported sigma_1 = 3.5 at 64 x 64 (k = 20, as tasks/spectrum.toml runs it)."""
    physics = make_physics("denoise", size=64, sigma=0.1)
    x = torch.rand(2, 1, 64, 64, generator=gen(4))
    found = top_singular(IdentityNet(), physics, x, 20, tol=1e-3, generator=gen())
    assert torch.allclose(found.sigma, torch.ones_like(found.sigma), atol=1e-5), found.sigma
    assert (found.residual < 1e-3).all()


@pytest.fixture(scope="module")
def automap():
    from survey.nets.zoo import is_trained, load_network

    if not is_trained("automap"):
        pytest.skip("zoo network automap has no weights")
    net, physics = load_network("automap")
    return net.double(), physics


@pytest.mark.slow   # the dense Jacobian: one backward per input pixel (~10 s)
def test_automap_sigma_1_matches_the_dense_autograd_jacobian(automap):
    net, physics = automap
    x = nn.functional.avg_pool2d(torch.rand(1, 1, 32, 32, generator=gen(4), dtype=torch.float64), 3, 1, 1)
    found = top_singular(net, physics, x, 3, tol=1e-9, iterations=80, generator=gen())
    y = physics.A(x)
    dense = dense_jacobian(lambda u: net(y + physics.A(u - x), physics), x)
    s = torch.linalg.svdvals(dense)
    assert math.isclose(float(found.sigma[0, 0]), float(s[0]), rel_tol=1e-6), (found.sigma[0], s[:3])
    assert torch.allclose(found.sigma[0], s[:3], rtol=1e-5)


def test_finite_differences_along_v1_approach_sigma_1(automap):
    net, physics = automap
    x = nn.functional.avg_pool2d(torch.rand(1, 1, 32, 32, generator=gen(5), dtype=torch.float64), 3, 1, 1)
    found = top_singular(net, physics, x, 1, tol=1e-10, iterations=60, generator=gen())
    sigma, v = float(found.sigma[0, 0]), found.vectors[0, 0][None]
    with torch.no_grad():
        clean = net(physics.A(x), physics)
        errors = []
        for t in (1e-1, 1e-2, 1e-3, 1e-4):
            moved = net(physics.A(x + t * v), physics)
            errors.append(abs(float((moved - clean).norm()) / t - sigma) / sigma)
    assert errors[-1] < 1e-4, errors
    assert all(b <= a * 1.01 for a, b in zip(errors, errors[1:])), errors  # shrinks with the step


def test_linearisation_products_are_adjoint_and_complex_in_the_measurement_domain():
    physics = make_physics("mri", size=N, ratio=0.4, mask="gaussian-lines", seed=0)
    net = LinearConvNet()
    x = torch.rand(2, 1, N, N, generator=gen(6), dtype=torch.float64)
    lin = Linearisation(net, physics, x, "measurement")
    v = torch.randn(lin.shape, generator=gen(7), dtype=lin.dtype) * lin.mask
    w = torch.randn(lin.clean.shape, generator=gen(8), dtype=torch.float64)
    jv, jtw = lin.jvp(v), lin.vjp(w)
    assert torch.is_complex(jtw) and not torch.is_complex(jv)
    lhs = (jv * w).flatten(1).sum(1)
    rhs = (torch.view_as_real(v) * torch.view_as_real(jtw)).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-10)
    # J v against a central difference of the linear network
    with torch.no_grad():
        y = physics.A(x)
        fd = (net(y + 1e-3 * v, physics) - net(y - 1e-3 * v, physics)) / 2e-3
    assert torch.allclose(jv, fd, rtol=1e-8, atol=1e-10)


def test_leading_directions_are_worst_case_starts_and_effective_rank():
    physics = make_physics("denoise", size=N, sigma=0.1)
    net = LinearConvNet()
    x = torch.rand(3, 1, N, N, generator=gen(9), dtype=torch.float64)
    starts = leading_directions(net, physics, x, 2, tol=1e-8, iterations=120, generator=gen())
    assert starts.shape == (2, 3, 1, N, N)
    assert torch.allclose(starts.flatten(2).norm(dim=2), torch.ones(2, 3, dtype=torch.float64))
    assert torch.allclose(effective_rank(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])), torch.tensor([3.0, 1.0]))


def test_spectrum_task_rows_tensors_and_sigma_rel():
    physics = make_physics("mri", size=N, ratio=0.4, mask="gaussian-lines", seed=0)
    x = torch.rand(2, 1, N, N, generator=gen(10), dtype=torch.float64)
    ctx = TaskContext(net=TikhonovNet(0.1), physics=physics, images=x, image_ids=["a", "b"], network="tik")
    task = make_task("spectrum", k=4, iterations=40, tol=1e-9)
    rows, tensors = task(ctx, generator_for("spectrum-test"))
    assert len(rows) == 8 and [r["k"] for r in rows[:4]] == [1, 2, 3, 4]
    assert tensors["v"].shape == (8, 1, N, N) and tensors["h_v"].shape == (8, 1, N, N)
    for r in rows:
        assert r["sigma"] <= r["upper_bound"] * (1 + 1e-6)
        assert r["h_sigma"] == pytest.approx(1.0, abs=1e-8) or r["k"] > 1
    with torch.no_grad():
        clean = TikhonovNet(0.1)(physics.A(x), physics)
    expected = rows[0]["sigma"] * float(x[0].norm()) / float(clean[0].norm())
    assert rows[0]["sigma_rel"] == pytest.approx(expected, rel=1e-9)
    assert rows[0]["effective_rank"] == pytest.approx(
        float(effective_rank(torch.tensor([r["sigma"] for r in rows[:4]], dtype=torch.float64))), rel=1e-9)
    with pytest.raises(ValueError, match="SpectrumTask.k"):
        make_task("spectrum", k=0)
    # plain Lanczos (block = 1, a quarter of the samples per product) reaches the same values
    single, _ = make_task("spectrum", k=4, iterations=40, tol=1e-9, block=1)(ctx, generator_for("spectrum-test"))
    assert [r["sigma"] for r in single] == pytest.approx([r["sigma"] for r in rows], rel=1e-6)
    with pytest.raises(ValueError, match="SpectrumTask.block"):
        make_task("spectrum", block=0)


E2E_STUDY = """
name = "spectrum-e2e"
seed = 0
store = "results"

[[networks]]
name = "dagan"

[[networks]]
name = "med50"

[[networks]]
name = "dncnn"

# the global bound's layer norms take 35-45 s on a 64 x 64 zoo network (tests/test_lipschitz.py bounds the zoo's);
# here it runs on a narrow U-Net (DAGAN's architecture) at 16 x 16
[[networks]]
name = "small-unet"
factory = "small_unet.py:build"
physics = { kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }

[[datasets]]
name = "brain"
split = "test"
count = 1

[[tasks]]
name = "spectrum"
networks = ["small-unet"]
images_per_unit = 1
params = { k = 4, iterations = 8, tol = 1e-3, with_reference = false }

[[tasks]]
name = "spectrum"
networks = ["dagan", "med50", "dncnn"]
images_per_unit = 1
params = { k = 4, iterations = 8, tol = 1e-3, with_reference = false, upper_bound = false }
"""

SMALL_UNET = """
import torch

from survey.nets.unet import UNet


def build():
    torch.manual_seed(0)
    return UNet(width=4, depth=2, input_mode="magnitude").eval()
"""


@pytest.mark.slow
def test_survey_run_fills_the_spectrum_table_and_its_section_renders(tmp_path):
    """The pipeline of tasks/spectrum.toml (three zoo networks of three modalities), shrunk to k = 4 on one
    image without the reference, the global bound on a fourth, small U-Net, for CPU time: rows in the store, the
    section in a headless browser."""
    import subprocess
    import sys

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from survey.nets.zoo import is_trained
    from tests.conftest import write_study
    from tests.conftest import CHROMIUM_FLAGS, chromium

    if not all(is_trained(n) for n in ("dagan", "med50", "dncnn")):
        pytest.skip("zoo weights missing")
    path = write_study(tmp_path, E2E_STUDY)
    (tmp_path / "small_unet.py").write_text(SMALL_UNET)
    run = subprocess.run([sys.executable, "-m", "survey.cli.main", "run", str(path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [{**r, "network": next(part.split("=", 1)[1] for part in f.parts if part.startswith("network="))}
            for f in (tmp_path / "results" / "spectrum").rglob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert {r["network"] for r in rows} == {"dagan", "med50", "dncnn", "small-unet"} and len(rows) == 16
    for r in rows:
        assert r["h_sigma"] is not None and r["sigma"] > 0
        if r["network"] == "small-unet":
            assert r["upper_bound"] is not None and r["upper_bound"] >= r["sigma"]
        else:
            assert r["upper_bound"] is None
    report = subprocess.run([sys.executable, "-m", "survey.cli.main", "report", "--study", str(path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stdout + report.stderr
    index = tmp_path / "reports" / "spectrum-e2e" / "index.html"
    html = index.read_text().replace("<wbr>", "")   # headers may break after an underscore
    assert "Local Jacobian spectrum and Lipschitz bounds" in html and "bound / max sigma_1" in html
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed")
    shot = tmp_path / "report.png"
    flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,3000", index.resolve().as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 20


def test_secant_gains_of_a_linear_map_are_its_sigma_1_at_every_step():
    """benchmarks/spectrum_locality.py (the README's reference-vs-network reach of sigma_1): for a linear map
    (Tikhonov on a Fourier mask) every secant gain along v_1 is sigma_1, however large the step; the identity
    (H of a denoiser) gives 1."""
    from benchmarks.spectrum_locality import secant_gains

    mask = symmetric_mask(N, [(0, 0), (0, 1), (1, 0), (2, 3), (0, N // 2)])
    physics = MRI(mask)
    x = torch.rand(1, 1, N, N, generator=gen(5), dtype=torch.float64)
    net = TikhonovNet(0.05)
    found = top_singular(net, physics, x, 1, tol=1e-10, iterations=60, generator=gen())
    gains = secant_gains(net, physics, x, found.vectors[:, 0])
    assert gains == pytest.approx([float(found.sigma[0, 0])] * len(gains), rel=1e-6)
    denoise = make_physics("denoise", size=N, sigma=0.1)
    v = torch.randn(1, 1, N, N, generator=gen(6), dtype=torch.float64)
    assert secant_gains(IdentityNet(), denoise, x, v / v.norm()) == pytest.approx([1.0] * len(gains), rel=1e-9)
