"""The worst-case attack finds the known worst direction, is reproducible, vectorised and consistent."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from survey.physics.base import LinearPhysics
from survey.tasks import make_task
from survey.tasks.attack import PRESETS, Attack, AttackReference, search, snapshot_plan
from survey.tasks.base import TaskContext, generator_for

N_SIDE = 16
DTYPE = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only contend on the shared 2-core machine (measured ~100x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class DensePhysics(LinearPhysics):
    """y = M vec(x) with a dense complex matrix M (m x n^2): tests the Re A* gradient convention."""

    kind = "dense"
    complex_measurements = True

    def __init__(self, matrix: torch.Tensor, size: int):
        super().__init__(size)
        self.register_buffer("matrix", matrix)

    @property
    def measurement_shape(self):
        return (self.matrix.shape[0],)

    def A(self, x):
        return (x.reshape(x.shape[0], -1).to(self.matrix.dtype)) @ self.matrix.T

    def A_adjoint(self, y):
        return (y @ self.matrix.conj()).reshape(y.shape[0], 1, self.size, self.size)


class LinearNet(nn.Module):
    """f(y) = Re(W y), reshaped to an image."""

    def __init__(self, weight: torch.Tensor, size: int):
        super().__init__()
        self.register_buffer("weight", weight)
        self.size = size

    def forward(self, y, physics):
        return (y @ self.weight.T).real.reshape(y.shape[0], 1, self.size, self.size)


class SmallNet(nn.Module):
    """A nonlinear residual CNN on Re A* y, with BatchNorm (which would mix samples in train mode)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Tanh(),
                                  nn.Conv2d(8, 1, 3, padding=1))
        with torch.no_grad():
            self.body[1].running_mean.uniform_(-0.1, 0.1)
            self.body[1].running_var.uniform_(0.5, 1.5)
        self.double().eval()

    def forward(self, y, physics):
        x0 = physics.A_adjoint(y).real
        return x0 + 2.0 * self.body(x0)


def _problem(seed: int = 0):
    """Physics A (complex, invertible) and a linear net W with f(A .) = Re(W A) = U diag(s) V^T known."""
    g = torch.Generator().manual_seed(seed)
    n2 = N_SIDE * N_SIDE
    gauss = torch.complex(torch.randn(n2, n2, generator=g, dtype=DTYPE), torch.randn(n2, n2, generator=g, dtype=DTYPE))
    a, _ = torch.linalg.qr(gauss)  # unitary: ||A|| = 1, so ||W|| = ||f(A .)|| stays small
    u, _ = torch.linalg.qr(torch.randn(n2, n2, generator=g, dtype=DTYPE))
    v, _ = torch.linalg.qr(torch.randn(n2, n2, generator=g, dtype=DTYPE))
    s = torch.linspace(1.0, 0.1, n2, dtype=DTYPE)
    s[0] = 3.0
    composite = u @ torch.diag(s) @ v.T
    weight = composite.to(a.dtype) @ a.conj().T
    physics = DensePhysics(a, N_SIDE)
    return physics, LinearNet(weight, N_SIDE), v[:, 0], float(s[0])


def _images(count: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 1, N_SIDE, N_SIDE, generator=g, dtype=DTYPE)
    return nn.functional.avg_pool2d(x, 3, stride=1, padding=1)


def _context(net, physics, count=2, reference=None, unit_id="unit-0"):
    return TaskContext(net=net, physics=physics, images=_images(count), image_ids=[f"img{i}" for i in range(count)],
                       reference=reference, network="test-net", dataset="test-data", unit_id=unit_id)


def test_linear_network_attack_finds_top_singular_vector():
    physics, net, v1, sigma1 = _problem()
    ctx = _context(net, physics, count=2)
    attack = Attack(lam=1e-3, gamma=0.9, eta=0.02, tau=1e-3, iterations=150, snapshot_iterations=[150],
                    snapshot_levels=[], restarts=2)
    rows, tensors = attack(ctx, generator_for("unit-0"))
    assert len(rows) == 4 and tensors["r"].shape == (4, 1, N_SIDE, N_SIDE)
    for row, r in zip(rows, tensors["r"]):
        cosine = abs(float(r.flatten() @ v1)) / float(r.norm())
        assert cosine >= 0.95, cosine
        assert row["ratio"] >= 0.95 * sigma1, (row["ratio"], sigma1)
        assert row["ratio"] <= sigma1 * (1 + 1e-9)  # cannot beat the operator norm
        assert row["iteration"] == 150 and row["snapshot"] == "iteration" and row["reached"]
        # p = f(Ax) and a linear f: the objective is exactly 1/2 ||f(A r)||^2 - lam/2 ||r||^2.
        expected = 0.5 * (row["ratio"] * row["r_norm"]) ** 2 - 0.5e-3 * row["r_norm"] ** 2
        assert math.isclose(row["objective"], expected, rel_tol=1e-9)


def test_measurement_domain_attack_reaches_gain_of_network():
    physics, net, _, _ = _problem()
    ctx = _context(net, physics, count=1)
    # Worst e for e -> Re(W e) over C^m = R^{2m}: largest singular value of [Re W, -Im W].
    gain = float(torch.linalg.matrix_norm(torch.cat([net.weight.real, -net.weight.imag], dim=1), ord=2))
    attack = Attack(lam=1e-6, eta=0.01, tau=1e-4, iterations=200, snapshot_iterations=[200], snapshot_levels=[],
                    domain="measurement")
    (row,), tensors = attack(ctx, generator_for("m"))
    assert torch.is_complex(tensors["r"])
    assert row["ratio"] >= 0.95 * gain and row["ratio"] <= gain * (1 + 1e-9)
    assert math.isclose(row["r_rel"], row["r_norm"] / float(physics.A(ctx.images).norm()), rel_tol=1e-9)
    assert row["Ar_norm"] == row["r_norm"]


def test_gradient_equals_autograd_of_q():
    """One plain step (gamma = 0) moves r0 by eta * grad Q, grad Q from autograd through A and f."""
    physics = _problem()[0]
    net = SmallNet()
    x = _images(2)
    r0 = 1e-2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    y = physics.A(x)
    with torch.no_grad():
        p_target = net(y, physics)
    lam, eta = 0.3, 0.05
    found = search(lambda u: net(u, physics), physics, x, p_target, r0, lam=lam, gamma=0.0, eta=eta,
                   iterations=1, snapshots=snapshot_plan(1, [1], []))
    r = r0.clone().requires_grad_(True)
    q = 0.5 * (net(physics.A(x + r), physics) - p_target).square().sum() - 0.5 * lam * r.square().sum()
    (grad,) = torch.autograd.grad(q, r)
    torch.testing.assert_close(found.perturbations[0], r0 + eta * grad, rtol=1e-9, atol=1e-12)


def test_same_unit_id_reproduces_rows_exactly():
    physics, _, _, _ = _problem()
    net = SmallNet()
    attack = Attack(iterations=40, eta=0.01, snapshot_iterations=[10, 40], snapshot_levels=[0.05], restarts=2)
    first = attack(_context(net, physics, unit_id="unit-7"), generator_for("unit-7"))
    second = attack(_context(net, physics, unit_id="unit-7"), generator_for("unit-7"))
    other = attack(_context(net, physics, unit_id="unit-8"), generator_for("unit-8"))
    assert first.rows == second.rows
    assert all(torch.equal(first.tensors[k], second.tensors[k]) for k in first.tensors)
    assert first.rows != other.rows
    row = first.rows[0]
    for key, value in dict(unit_id="unit-7", network="test-net", dataset="test-data", task="attack", lam=0.01,
                           gamma=0.9, eta=0.01, tau=1e-3, p="fAx", domain="image", gradient="adjoint").items():
        assert row[key] == value, key
    assert all(v is None or isinstance(v, (int, float, str, bool)) for r in first.rows for v in r.values())


def test_snapshots_fire_at_first_crossing_and_at_iterations():
    physics, _, _, _ = _problem()
    net = SmallNet()
    ctx = _context(net, physics, count=3)
    steps = list(range(0, 61))
    levels = [0.01, 0.03, 0.1]
    attack = Attack(lam=0.01, eta=0.01, tau=1e-3, iterations=60, snapshot_iterations=steps, snapshot_levels=levels)
    rows, tensors = attack(ctx, generator_for("levels"))
    assert len(rows) == 3 * (len(steps) + len(levels))
    by_image: dict[str, dict] = {}
    for k, row in enumerate(rows):
        entry = by_image.setdefault(row["image_id"], {"iteration": {}, "level": {}})
        entry[row["snapshot"]][row["snapshot_target"]] = (row, tensors["r"][k])
    for image_id, entry in by_image.items():
        for step, (row, _) in entry["iteration"].items():
            assert row["iteration"] == step
        for level, (row, r) in entry["level"].items():
            assert row["reached"], (image_id, level)
            i = row["iteration"]
            assert i >= 1
            assert row["r_rel"] >= level > entry["iteration"][float(i - 1)][0]["r_rel"]
            same, r_same = entry["iteration"][float(i)]
            assert torch.equal(r, r_same) and row["r_rel"] == same["r_rel"]
            # "just above": one step overshoots by far less than the level spacing here.
            assert row["r_rel"] < 1.5 * level


def test_unreached_level_is_flagged_and_early_stop():
    physics, _, _, _ = _problem()
    net = SmallNet()
    ctx = _context(net, physics, count=1)
    attack = Attack(eta=1e-2, iterations=20, snapshot_levels=[0.002, 50.0])
    rows, _ = attack(ctx, generator_for("u"))
    low, high = rows
    assert low["reached"] and not high["reached"] and high["iteration"] == 20
    assert low["iterations_run"] == 20
    early = Attack(eta=1e-2, iterations=500, snapshot_levels=[0.002])
    (row,), _ = early(ctx, generator_for("u"))
    assert row["reached"] and row["iterations_run"] == row["iteration"] < 500


def test_rows_agree_with_recomputation():
    physics, _, _, _ = _problem()
    net = SmallNet()
    ctx = _context(net, physics, count=2)
    rows, tensors = Attack(iterations=30, eta=0.01, snapshot_iterations=[15, 30], snapshot_levels=[])(
        ctx, generator_for("consistency"))
    with torch.no_grad():
        clean = net(physics.A(ctx.images), physics)
        for k, row in enumerate(rows):
            b = ctx.image_ids.index(row["image_id"])
            x, r = ctx.images[b:b + 1], tensors["r"][k:k + 1]
            out = net(physics.A(x + r), physics)
            torch.testing.assert_close(out, tensors["out"][k:k + 1])
            change = float((out - clean[b]).norm())
            assert math.isclose(row["out_change"], change, rel_tol=1e-9)
            assert math.isclose(row["out_change_rel"], change / float(clean[b].norm()), rel_tol=1e-9)
            assert math.isclose(row["r_rel"], float(r.norm() / x.norm()), rel_tol=1e-9)
            assert math.isclose(row["ratio"], change / float(r.norm()), rel_tol=1e-9)
            assert math.isclose(row["err_rel"], float((out - x).norm() / x.norm()), rel_tol=1e-9)
            assert math.isclose(row["psnr_visibility"], -10 * math.log10(float(r.square().mean())), rel_tol=1e-9)


def test_vectorised_batch_equals_one_at_a_time():
    """3 images x 2 restarts in one call give, sample by sample, what each sample gives alone."""
    physics, _, _, _ = _problem()
    net = SmallNet()
    net.train()  # the task must switch to eval mode (BatchNorm in train mode mixes samples) and restore it
    ctx = _context(net, physics, count=3)
    attack = Attack(lam=0.01, eta=0.01, tau=1e-3, iterations=40, snapshot_iterations=[5, 40],
                    snapshot_levels=[0.02, 0.05], restarts=2)
    rows, tensors = attack(ctx, generator_for("vector"))
    assert net.training
    assert [(r["image_id"], r["restart"]) for r in rows[::4]] == [(f"img{b}", k) for b in range(3) for k in range(2)]
    # The task draws r0 for the stacked batch (image-major, then restart) in one call.
    x_stack = ctx.images.repeat_interleave(2, dim=0)
    r0 = attack.tau * torch.rand(x_stack.shape, generator=generator_for("vector"), dtype=DTYPE)
    net.eval()
    plan = snapshot_plan(40, [5, 40], [0.02, 0.05])
    for n in range(6):
        x = x_stack[n:n + 1]
        with torch.no_grad():
            p_target = net(physics.A(x), physics)
        alone = search(lambda u: net(u, physics), physics, x, p_target, r0[n:n + 1], lam=0.01, gamma=0.9,
                       eta=0.01, iterations=40, snapshots=plan)
        for s in range(len(plan)):
            k = n * len(plan) + s
            assert rows[k]["iteration"] == int(alone.iteration[s, 0])
            torch.testing.assert_close(tensors["r"][k], alone.perturbations[s, 0], rtol=1e-7, atol=1e-10)


def test_support_mask_confines_perturbation():
    physics, _, _, _ = _problem()
    net = SmallNet()
    ctx = _context(net, physics, count=1)
    images = torch.zeros(1, 1, N_SIDE, N_SIDE, dtype=DTYPE)
    images[..., 5:11, 5:11] = 1.0
    ctx.images = images
    (row,), tensors = Attack(iterations=20, eta=0.01, support="foreground", support_dilation=1,
                             snapshot_iterations=[20], snapshot_levels=[])(ctx, generator_for("s"))
    r = tensors["r"][0, 0]
    outside = torch.ones_like(r, dtype=torch.bool)
    outside[4:12, 4:12] = False
    assert float(r[outside].abs().max()) == 0.0 and float(r.abs().max()) > 0
    assert row["r_outside_frac"] == 0.0


def test_presets_and_registry():
    attack = Attack.preset("automap-fig7", iterations=10)
    assert (attack.lam, attack.eta, attack.tau, attack.p, attack.label) == (0.1, 1e-3, 1e-5, "x", "automap-fig7")
    assert set(PRESETS) == {"deepmri", "automap-fig2", "automap-fig7", "mrivn", "med50"}
    built = make_task("attack", preset="mrivn", snapshot_levels=[0.01])
    assert isinstance(built, Attack) and built.lam == 1.0 and built.snapshot_levels == (0.01,)
    assert isinstance(make_task("attack-reference"), AttackReference)
    with pytest.raises(ValueError, match="unknown attack preset"):
        Attack.preset("nope")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_task("attack", learning_rate=1)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("atack")
    with pytest.raises(ValueError, match="snapshot_iterations"):
        Attack(iterations=5, snapshot_iterations=[6])
    with pytest.raises(ValueError, match="domain"):
        Attack(domain="kspace")


def test_generator_for_is_stable():
    a = torch.rand(3, generator=generator_for("brain/z083:attack:0"))
    b = torch.rand(3, generator=generator_for("brain/z083:attack:0"))
    c = torch.rand(3, generator=generator_for("brain/z083:attack:1"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError):
        generator_for("")


class EasyReconNet(nn.Module):
    """A small nonlinear network on Re H(y) (FBP for Radon, A* for MRI)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1).double()

    def forward(self, y, physics):
        x0 = physics.H(y)
        x0 = x0.real if torch.is_complex(x0) else x0
        return x0 + torch.tanh(self.conv(x0.to(torch.float64)))


def test_measurement_attack_on_mri_stays_on_sampled_kspace():
    from survey.physics import make_physics

    physics = make_physics("mri", size=N_SIDE, ratio=0.3, mask="gaussian-lines", seed=0)
    ctx = _context(EasyReconNet(), physics, count=2)
    rows, tensors = Attack(domain="measurement", eta=0.05, iterations=10, snapshot_iterations=[10],
                           snapshot_levels=[])(ctx, generator_for("kspace"))
    e = tensors["r"]
    assert torch.is_complex(e) and float(e.abs().max()) > 0
    # Nothing off the sampling mask: A A* is the projection onto sampled k-space for MRI.
    torch.testing.assert_close(physics.A(physics.A_adjoint(e)), e)
    assert all(r["ratio"] > 0 and r["domain"] == "measurement" for r in rows)


def test_radon_uses_algorithm_2():
    from survey.physics import make_physics

    physics = make_physics("radon", size=N_SIDE, views=12)
    net = EasyReconNet()
    ctx = _context(net, physics, count=2)
    attack = Attack(lam=0.01, eta=1e-4, tau=1e-3, iterations=25, snapshot_iterations=[1, 25], snapshot_levels=[])
    rows, tensors = attack(ctx, generator_for("radon"))
    assert {r["gradient"] for r in rows} == {"fbp"} and {r["physics"] for r in rows} == {"radon"}
    # The first update is eta * (B grad_u g - lam r0) with B = ||A||^2 FBP (velocity starts at 0).
    x = ctx.images
    r0 = attack.tau * torch.rand(x.shape, generator=generator_for("radon"), dtype=DTYPE)
    u = (physics.A(x + r0)).requires_grad_(True)
    with torch.no_grad():
        p_target = net(physics.A(x), physics)
    (grad_u,) = torch.autograd.grad(0.5 * (net(u, physics) - p_target).square().sum(), u)
    expected = r0 + attack.eta * (physics.norm() ** 2 * physics.H(grad_u) - attack.lam * r0)
    torch.testing.assert_close(tensors["r"][0::2], expected, rtol=1e-8, atol=1e-12)
    assert all(r["ratio"] > 0 and math.isfinite(r["psnr"]) for r in rows)
    adjoint = Attack(lam=0.01, eta=1e-4, tau=1e-3, iterations=1, snapshot_iterations=[1], snapshot_levels=[],
                     gradient="adjoint")
    rows_adj, _ = adjoint(ctx, generator_for("radon"))
    assert rows_adj[0]["gradient"] == "adjoint" and rows_adj[0]["r_norm"] != rows[0]["r_norm"]


def _tiny_reference():
    from survey.solvers.cs import CSReconstructor

    return CSReconstructor(lam_w=1e-3, lam_tv=2e-3, iterations=8, wavelet="db2", levels=2)


def test_network_attack_reports_reference_on_same_data():
    physics, _, _, _ = _problem()
    net, reference = SmallNet(), _tiny_reference()
    ctx = _context(net, physics, count=2, reference=reference)
    rows, tensors = Attack(iterations=10, eta=0.01, snapshot_iterations=[10], snapshot_levels=[])(
        ctx, generator_for("ref"))
    with torch.no_grad():
        for k, row in enumerate(rows):
            b = ctx.image_ids.index(row["image_id"])
            x, r = ctx.images[b:b + 1], tensors["r"][k:k + 1]
            ref_out = reference(physics.A(x + r), physics)
            ref_clean = reference(physics.A(x), physics)
            torch.testing.assert_close(ref_out, tensors["ref_out"][k:k + 1])
            assert math.isclose(row["ref_ratio"], float((ref_out - ref_clean).norm() / r.norm()), rel_tol=1e-6)
            assert row["ref_psnr"] > 0 and 0 < row["ref_ssim"] <= 1


def test_reference_target_attacks_unrolled_solver():
    physics, _, _, _ = _problem()
    reference = _tiny_reference()
    ctx = _context(SmallNet(), physics, count=2, reference=reference)
    task = make_task("attack-reference", iterations=15, eta=0.05, snapshot_iterations=[0, 15], snapshot_levels=[])
    rows, tensors = task(ctx, generator_for("refattack"))
    assert not reference.unrolled  # the caller's solver is left as it was
    assert {r["attacked"] for r in rows} == {"reference"} and rows[0]["task"] == "attack-reference"
    assert not any(k.startswith("ref_") for k in rows[0])
    start, end = rows[0], rows[1]
    assert (start["iteration"], end["iteration"]) == (0, 15)
    # The search climbed Q (gradients flowed through the unrolled FISTA iterations).
    assert end["objective"] > start["objective"] and end["r_norm"] > start["r_norm"]
