"""Motion severity measures motion during the acquisition: the pose at the k-space centre (or the mean pose) is
removed before scaling, so a patient lying shifted is not motion, and `register` undoes a global shift so a score
need not count it as damage."""

from __future__ import annotations

import math

import pytest
import torch

from survey.perturb import make_family
from survey.perturb.motion import register, translate
from tests.test_families import SIZE, latents, objects, operators  # noqa: F401 (fixture)


def test_the_pose_at_the_kspace_centre_is_removed_before_scaling(operators):
    physics = operators["mri"]
    family = make_family("motion", rotation_per_pixel=1.0)
    assert family.pose == "centre"
    z = latents(family, physics, 4)
    severity = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    rows, shifts, angles = family.trajectory(z, severity, physics)
    ky = torch.where(rows >= SIZE // 2, rows - SIZE, rows)
    centre = int(ky.abs().argmin())
    assert int(ky[centre]) == 0
    assert float(shifts[:, centre].abs().max()) == 0.0 and float(angles[:, centre].abs().max()) == 0.0
    torch.testing.assert_close(shifts.square().sum(-1).mean(1).sqrt(), severity)   # RMS motion = severity
    mean = make_family("motion", pose="mean")
    _, shifts_m, _ = mean.trajectory(z, severity, physics)
    torch.testing.assert_close(shifts_m.mean(1), torch.zeros(4, 2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_a_constant_pose_is_no_motion_unless_kept(operators):
    physics = operators["mri"]
    x = objects(2)
    y = physics.A(x)
    family = make_family("motion", rotation_per_pixel=0.0)
    z = torch.zeros((2, *family.latent_shape(physics)), dtype=torch.float64)
    z[:, 0] = 1.0                                   # mode 0 of the row shift: the same pose for every line
    torch.testing.assert_close(family.perturb(y, z, 2.0, physics, x=x), y, rtol=0, atol=1e-12)
    kept = make_family("motion", rotation_per_pixel=0.0, pose="absolute")
    assert float((kept.perturb(y, z, 2.0, physics, x=x) - y).abs().max()) > 0.1   # a clean 2 px shift
    with pytest.raises(ValueError, match="constant pose"):
        make_family("motion", modes=1)


def test_register_undoes_a_global_shift_and_the_pose_carried_most_of_the_old_damage(operators):
    x = objects(3).to(torch.float64)
    shifted = translate(x[:, 0].to(torch.complex128), torch.tensor([2.3, -1.0, 0.4], dtype=torch.float64),
                        torch.tensor([-0.7, 1.6, 0.0], dtype=torch.float64)).real.unsqueeze(1)
    before = (shifted - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    after = (register(shifted, x) - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert bool((before > 0.2).all()) and bool((after < 0.25 * before).all()), (before, after)
    torch.testing.assert_close(register(x, x), x, rtol=0, atol=1e-9)   # nothing to undo
    # at one severity, the change in H(y') with the pose kept is mostly the pose: removing it leaves less
    physics = operators["mri"]
    y = physics.A(x)
    z = latents(make_family("motion"), physics, 3, seed=5)

    def change(pose):
        out = physics.H(make_family("motion", pose=pose).perturb(y, z, 1.0, physics, x=x)).real
        ref = physics.H(y).real
        return float(((out - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).mean())

    assert change("centre") < change("absolute")
    assert math.isfinite(change("mean"))


def test_severity_can_register_before_scoring():
    """A kept constant pose (pose='absolute', a clean 2 px shift of every line) is damage to the plain score and
    (almost) none once the severity task registers each output onto the clean one."""
    from survey.nets.exact import IdentityNet
    from survey.physics import make_physics
    from survey.tasks import TaskContext, generator_for, make_task

    physics = make_physics("mri", size=SIZE, ratio=1.0, mask="gaussian-lines", seed=0).to(torch.float64)
    x = objects(2)
    ctx = TaskContext(net=IdentityNet(), physics=physics, images=x, image_ids=["a", "b"], network="id",
                      dataset="d", unit_id="reg")

    def change(register):
        task = make_task("severity", families={"motion": [2.0]}, draws=2, with_reference=False, register=register,
                         family_params={"motion": {"pose": "absolute", "modes": 1, "rotation_per_pixel": 0.0}})
        rows = task(ctx, generator_for("reg")).rows
        assert all(r["registered"] == register for r in rows)
        return max(r["out_change_rel"] for r in rows)

    plain, registered = change(False), change(True)
    assert plain > 0.2 and registered < 0.1 * plain, (plain, registered)
