"""The Gaussian-ball task: exact norms, analytic linear cases, the attack's centre, batching, replay."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from survey.physics import make_physics
from survey.physics.base import LinearPhysics
from survey.plan import expand_grid
from survey.spec import TaskSpec
from survey.tasks import make_task
from survey.tasks.attack import Attack
from survey.tasks.ball import PER_IMAGE, Ball, draw_seeds, gaussian_directions
from survey.tasks.base import TaskContext, generator_for

N_SIDE = 16
DTYPE = torch.float64


class IdentityPhysics(LinearPhysics):
    """A = I on (B, 1, n, n): denoising geometry, where everything is analytically checkable."""

    kind = "identity"

    @property
    def measurement_shape(self):
        return (1, self.size, self.size)

    def A(self, x):
        return x

    def A_adjoint(self, y):
        return y


class ScaledNet(nn.Module):
    """f(y) = a * Re H(y): linear, so every relative change is a ratio of noise norms."""

    def __init__(self, a: float = 0.5):
        super().__init__()
        self.a = a

    def forward(self, y, physics):
        return self.a * physics.H(y).real


class SmallNet(nn.Module):
    """A nonlinear residual CNN with BatchNorm (which would mix samples if left in train mode)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Tanh(),
                                  nn.Conv2d(6, 1, 3, padding=1))
        with torch.no_grad():
            self.body[1].running_mean.uniform_(-0.1, 0.1)
            self.body[1].running_var.uniform_(0.5, 1.5)
        self.double().eval()
        self.calls: list[int] = []

    def forward(self, y, physics):
        self.calls.append(y.shape[0])
        x0 = physics.H(y).real
        return x0 + 2.0 * self.body(x0)


def _images(count: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 1, N_SIDE, N_SIDE, generator=g, dtype=DTYPE)
    return nn.functional.avg_pool2d(x, 3, stride=1, padding=1)


def _context(net, physics, count=2, reference=None, unit_id="unit-0"):
    return TaskContext(net=net, physics=physics, images=_images(count), image_ids=[f"img{i}" for i in range(count)],
                       reference=reference, network="test-net", dataset="test-data", unit_id=unit_id)


def _mri():
    return make_physics("mri", size=N_SIDE, ratio=0.5, seed=0)


ATTACK = dict(lam=0.01, eta=1e-2, tau=1e-3, iterations=60)
REQUIRED = {"image_id", "center", "radius_kind", "radius", "draw", "noise_norm", "r_rel", "out_change_rel",
            "center_change_rel", "persist_rel", "err_rel", "psnr", "ref_out_change_rel", "ref_err_rel",
            "ref_psnr", "has_reference", "image_index", "noise_domain", "level", "center_reached"}


@pytest.mark.parametrize("noise_domain", ["image", "measurement"])
def test_linear_identity_network_moves_by_exactly_the_radius(noise_domain):
    physics, net = IdentityPhysics(N_SIDE), ScaledNet(0.5)
    ctx = _context(net, physics)
    x_norm = ctx.images.flatten(1).norm(dim=1)
    radii = [0.0, 0.05, 0.3]
    clean = Ball(center="clean", radius=radii, radius_kind="relative-x", draws=4, noise_domain=noise_domain)
    rows, _ = clean(ctx, generator_for("lin"))
    assert len(rows) == 2 * 3 * 4
    for row in rows:
        b = row["image_index"]
        # f(x + v) - f(x) = a v and f(x) = a x: the relative change is ||v|| / ||x|| = radius.
        assert math.isclose(row["noise_norm"], row["radius"] * float(x_norm[b]), rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(row["out_change_rel"], row["radius"], rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(row["noise_rel"], row["radius"], rel_tol=1e-12, abs_tol=1e-15)
        assert row["center_change_rel"] == 0.0 and row["r_rel"] == 0.0
        assert row["persist_rel"] is None and row["artefact_cos"] is None and row["level"] is None
    # Around a worst-case centre r the artefact a r moves by a v, so persist_rel = ||v|| / ||r|| = radius.
    worst = Ball(radius=[0.0, 0.25, 1.0], draws=3, noise_domain=noise_domain, attack={"eta": 0.2, "iterations": 200})
    rows, tensors = worst(ctx, generator_for("lin"))
    r = tensors[f"{PER_IMAGE}r"]
    for row in rows:
        r_norm = float(r[row["image_index"]].norm())
        assert row["center_reached"] and row["r_rel"] >= 0.02
        assert math.isclose(row["noise_norm"], row["radius"] * r_norm, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(row["persist_rel"], row["radius"], rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(row["center_change_rel"], row["r_rel"], rel_tol=1e-9)


def test_absolute_radius_gives_that_norm():
    ctx = _context(SmallNet(), _mri())
    rows, _ = Ball(center="clean", radius=[0.0, 0.7], radius_kind="absolute", draws=3)(ctx, generator_for("abs"))
    for row in rows:
        assert math.isclose(row["noise_norm"], row["radius"], rel_tol=1e-12, abs_tol=1e-15)
        assert row["target_norm"] == row["radius"]


def test_radius_zero_around_worst_case_reproduces_the_attack():
    physics, net = _mri(), SmallNet()
    ctx = _context(net, physics, unit_id="centre")
    ball = Ball(level=0.02, radius=[0.0, 0.25], draws=3, attack={**ATTACK, "restarts": 2})
    rows, tensors = ball(ctx, generator_for("centre"))
    attack_rows, attack_tensors = Attack(**ATTACK, restarts=2, snapshot_levels=[0.02])(ctx, generator_for("centre"))
    for b in range(2):
        candidates = [k for k, row in enumerate(attack_rows) if row["image_id"] == f"img{b}"]
        best = max(candidates, key=lambda k: attack_rows[k]["out_change_rel"])
        expected = attack_rows[best]
        assert torch.equal(tensors[f"{PER_IMAGE}r"][b], attack_tensors["r"][best])
        torch.testing.assert_close(tensors[f"{PER_IMAGE}center_out"][b], attack_tensors["out"][best])
        mine = [row for row in rows if row["image_index"] == b]
        for row in mine:
            assert row["center_restart"] == expected["restart"] and row["center_reached"]
            assert row["center_iteration"] == expected["iteration"]
            assert math.isclose(row["r_rel"], expected["r_rel"], rel_tol=1e-12)
            assert math.isclose(row["center_change_rel"], expected["out_change_rel"], rel_tol=1e-9)
        for row in (row for row in mine if row["radius"] == 0.0):
            assert row["noise_norm"] == 0.0 and row["persist_rel"] == 0.0
            assert math.isclose(row["out_change_rel"], expected["out_change_rel"], rel_tol=1e-9)
            assert math.isclose(row["psnr"], expected["psnr"], rel_tol=1e-9)
        for row in (row for row in mine if row["radius"] == 0.25):
            assert math.isclose(row["noise_norm"], 0.25 * expected["r_norm"], rel_tol=1e-12)


def test_unreached_level_is_recorded_and_last_iterate_used():
    ctx = _context(SmallNet(), _mri(), count=1)
    rows, tensors = Ball(level=5.0, draws=2, attack={"iterations": 3})(ctx, generator_for("short"))
    assert all(not row["center_reached"] and row["center_iteration"] == 3 for row in rows)
    assert all(row["attack_iterations_run"] == 3 and 0 < row["r_rel"] < 5.0 for row in rows)
    assert float(tensors[f"{PER_IMAGE}r"].norm()) > 0


def test_same_unit_id_replays_and_draws_do_not_depend_on_batching():
    physics = _mri()
    net = SmallNet()
    net.train()  # the task must use eval mode (else BatchNorm makes a sample depend on its batch)
    ball = Ball(radius=[0.1, 0.5], draws=7, batch=8, attack=ATTACK)
    first = ball(_context(net, physics, unit_id="u7"), generator_for("u7"))
    assert net.training
    again = ball(_context(net, physics, unit_id="u7"), generator_for("u7"))
    other = ball(_context(net, physics, unit_id="u8"), generator_for("u8"))
    assert first.rows == again.rows
    assert all(torch.equal(first.tensors[k], again.tensors[k]) for k in first.tensors)
    assert [r["out_change_rel"] for r in first.rows] != [r["out_change_rel"] for r in other.rows]
    # 2 images x 2 radii x 2 draws per call: (the attack's calls), clean, centre, then 8, 8, 8, 4.
    net.calls.clear()
    ball(_context(net, physics, unit_id="u7"), generator_for("u7"))
    assert net.calls[-6:] == [2, 2, 8, 8, 8, 4]
    one_big = Ball(radius=[0.1, 0.5], draws=7, batch=10_000, attack=ATTACK)(
        _context(net, physics, unit_id="u7"), generator_for("u7"))
    one_by_one = Ball(radius=[0.1, 0.5], draws=7, batch=1, attack=ATTACK)(
        _context(net, physics, unit_id="u7"), generator_for("u7"))
    fewer = Ball(radius=[0.1, 0.5], draws=3, batch=5, attack=ATTACK)(
        _context(net, physics, unit_id="u7"), generator_for("u7"))
    _assert_rows_close(first.rows, one_big.rows)
    _assert_rows_close(first.rows, one_by_one.rows)
    _assert_rows_close(fewer.rows, [r for r in first.rows if r["draw"] < 3], ignore=("draws",))


def _assert_rows_close(rows, expected, ignore=()):
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        assert row.keys() == want.keys()
        for key, value in row.items():
            if key in ignore:
                continue
            if isinstance(value, float) and not isinstance(want[key], bool):
                assert math.isclose(value, want[key], rel_tol=1e-9, abs_tol=1e-12), key
            else:
                assert value == want[key], key


@pytest.mark.parametrize("kind", ["mri", "radon"])
def test_measurement_domain_noise(kind):
    physics = make_physics(kind, size=N_SIDE, **({"ratio": 0.5} if kind == "mri" else {"views": 10}))
    ctx = _context(SmallNet(), physics)
    y = physics.A(ctx.images)
    e = gaussian_directions(draw_seeds(generator_for("m"), 3), y, getattr(physics, "sampling", None))
    assert e.shape == (3, *y.shape) and torch.is_complex(e) == (kind == "mri")
    if kind == "mri":  # only sampled k-space entries are measurements
        off = ~physics.sampling.expand_as(y)
        assert float(e[:, off].abs().max()) == 0.0 and float(e[:, ~off].abs().min()) > 0
    ball = Ball(radius=[0.25], noise_domain="measurement", draws=3, attack={**ATTACK, "eta": 1e-3, "iterations": 40})
    rows, tensors = ball(ctx, generator_for(kind))
    r = tensors[f"{PER_IMAGE}r"]
    shift_norm = physics.A(r).flatten(1).norm(dim=1)
    for row in rows:
        # relative-r with measurement noise: ||e|| = radius * ||A r||.
        assert math.isclose(row["noise_norm"], 0.25 * float(shift_norm[row["image_index"]]), rel_tol=1e-12)
        assert all(math.isfinite(row[k]) for k in ("out_change_rel", "persist_rel", "err_rel", "psnr"))
    # Image-domain noise on Radon is real A* e, and a measurement-domain centre works as well.
    if kind == "radon":
        rows, tensors = Ball(radius=[0.5], radius_kind="relative-x", draws=2,
                             attack={"domain": "measurement", "eta": 1e-4, "iterations": 30})(ctx, generator_for("md"))
        assert {row["center_domain"] for row in rows} == {"measurement"}
        assert tensors[f"{PER_IMAGE}r"].shape == (2, *y.shape[1:])
        x_norm = ctx.images.flatten(1).norm(dim=1)
        assert all(math.isclose(row["noise_norm"], 0.5 * float(x_norm[row["image_index"]]), rel_tol=1e-12)
                   for row in rows)


def test_reference_on_a_subsample_of_draws():
    from survey.solvers.cs import CSReconstructor

    physics = _mri()
    reference = CSReconstructor(lam_w=1e-3, lam_tv=2e-3, iterations=8, wavelet="db2", levels=2)
    ctx = _context(SmallNet(), physics, reference=reference)
    rows, _ = Ball(center="clean", radius=[0.0, 0.1], radius_kind="relative-x", draws=3, reference_draws=2,
                   with_reference=True)(ctx, generator_for("ref"))
    with torch.no_grad():
        ref_clean = reference(physics.A(ctx.images), physics)
    for row in rows:
        assert row["has_reference"] == (row["draw"] < 2)
        if not row["has_reference"]:
            assert row["ref_out_change_rel"] is None and row["ref_err_rel"] is None and row["ref_psnr"] is None
            continue
        assert row["ref_out_change_rel"] >= 0 and math.isfinite(row["ref_psnr"])
        if row["radius"] == 0.0:  # same data as the clean reconstruction
            b = row["image_index"]
            assert row["ref_out_change_rel"] < 1e-9
            expected = float((ref_clean[b] - ctx.images[b]).norm() / ctx.images[b].norm())
            assert math.isclose(row["ref_err_rel"], expected, rel_tol=1e-9)
    with pytest.raises(ValueError, match="reference"):
        Ball(center="clean", radius_kind="absolute", draws=1, with_reference=True)(
            _context(SmallNet(), physics), generator_for("x"))


def test_rows_columns_tensors_and_threshold():
    ctx = _context(SmallNet(), _mri())
    rows, tensors = Ball(radius=0.25, draws=2, bad_threshold=0.0, with_ssim=True, attack=ATTACK)(
        ctx, generator_for("cols"))
    assert len(rows) == 4 and all(REQUIRED <= row.keys() for row in rows)
    assert [(r["image_id"], r["draw"]) for r in rows] == [("img0", 0), ("img0", 1), ("img1", 0), ("img1", 1)]
    assert all(row["bad"] is True and row["radius"] == 0.25 and 0 < row["ssim"] <= 1 for row in rows)
    no_ssim, _ = Ball(center="clean", radius_kind="absolute", draws=1, with_ssim=False)(ctx, generator_for("c"))
    assert all(row["ssim"] is None and math.isfinite(row["psnr"]) for row in no_ssim)
    assert all(v is None or isinstance(v, (int, float, str, bool)) for r in rows for v in r.values())
    assert set(tensors) == {f"{PER_IMAGE}{k}" for k in ("r", "clean_out", "center_out", "first_draw_out")}
    assert tensors[f"{PER_IMAGE}r"].shape == (2, 1, N_SIDE, N_SIDE)
    assert tensors[f"{PER_IMAGE}first_draw_out"].shape == (2, 1, 1, N_SIDE, N_SIDE)
    for row in rows:  # the per-image tensors are indexed by image_index
        r = tensors[f"{PER_IMAGE}r"][row["image_index"]]
        x = ctx.images[row["image_index"]]
        assert math.isclose(row["r_rel"], float(r.norm() / x.norm()), rel_tol=1e-12)


def test_validation_registry_and_grid():
    ball = make_task("ball", radius=[0.1, 0.25], attack={"preset": "deepmri", "iterations": 20})
    assert isinstance(ball, Ball) and ball.radii == (0.1, 0.25)
    attack = ball.attack_task()
    assert attack.eta == 1e-2 and attack.snapshot_levels == (0.02,) and attack.iterations == 20
    # A flat list of radii is one unit (shared centre); a list of lists is a grid.
    assert len(expand_grid(TaskSpec(name="ball", params={"radius": [0.1, 0.25]}))) == 1
    assert len(expand_grid(TaskSpec(name="ball", params={"radius": [[0.1], [0.25]]}))) == 2
    for bad, match in ((dict(radius_kind="rel"), "radius_kind"), (dict(center="random"), "center"),
                       (dict(radius=-0.1), "radius"), (dict(draws=0), "draws"), (dict(level=0), "level"),
                       (dict(center="clean"), "relative-r"), (dict(attack={"snapshot_levels": [0.1]}), "set by"),
                       (dict(attack={"learning_rate": 1}), "unknown parameter"),
                       (dict(attack={"domain": "measurement"}), "measurement-domain centre")):
        with pytest.raises(ValueError, match=match):
            make_task("ball", **bad)
