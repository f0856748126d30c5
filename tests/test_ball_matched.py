"""The matched ball: network, H and reference each around their own worst case at the same budget, with the
same draw directions, scored by the tested `survey.tasks.budget.point_gain`.

Controls: the identity network (f = Re H) with the reference beside it has P(point_gain >= 2) = 0, and its
own centre and every point gain equal H's (the same search from the same starts finds the same worst case).
The network's numbers do not depend on the mode (own centres or the network's points for the others): only
what H and the reference are scored on changes.
"""

from __future__ import annotations

import pytest
import torch

from survey.nets.exact import IdentityNet, MatrixNet
from survey.physics import make_physics
from survey.solvers.cs import make_reference
from survey.tasks import generator_for
from tests.test_ball_controls import ball, context, images, mri

N = 16


def test_identity_with_the_reference_as_control_gives_p_zero_around_its_own_centres():
    physics, x = mri(), images()
    reference = make_reference(physics, iterations=10)
    rows = ball(100, with_reference=True, reference_draws=6)(context(IdentityNet(), physics, x, reference),
                                                             generator_for("matched")).rows
    assert {r["centres"] for r in rows} == {"own"} and len(rows) == 2 * 100
    assert sum(r["point_gain"] >= 2 for r in rows) == 0                      # the identity: P = 0
    assert sum(r["h_point_gain"] >= 2 for r in rows) == 0
    for r in rows:   # the identity is H: its own worst case and every ball point coincide with H's
        assert r["h_center_gain"] == pytest.approx(r["center_gain"], rel=1e-6)
        assert r["h_point_gain"] == pytest.approx(r["point_gain"], rel=1e-6)
    ref = [r for r in rows if r["has_reference"]]
    assert len(ref) == 2 * 6 and all(r["ref_point_gain"] > 0 for r in ref)
    # the reference's centre is its own worst case: not smaller than its response at the network's centre
    transferred = ball(1, with_reference=True, reference_draws=1, centres="network")(
        context(IdentityNet(), physics, x, reference), generator_for("matched")).rows
    own = {r["image_id"]: r["ref_center_gain"] for r in rows}
    for r in transferred:
        assert r["centres"] == "network's"
        assert own[r["image_id"]] >= 0.95 * r["ref_center_gain"]


def test_network_numbers_do_not_depend_on_the_mode_and_h_gets_its_own_centre():
    physics = make_physics("denoise", size=N)
    x = images().to(torch.float64)
    net = MatrixNet.with_spectrum(N, torch.linspace(0.2, 3.0, N * N), generator=torch.Generator().manual_seed(1))
    own = ball(40, radius=[0.25, 1.0])(context(net, physics, x), generator_for("modes")).rows
    other = ball(40, radius=[0.25, 1.0], centres="network")(context(net, physics, x), generator_for("modes")).rows
    assert len(own) == len(other) == 2 * 2 * 40
    for a, b in zip(own, other):
        for name in ("point_gain", "out_change_rel", "psnr", "artefact_cos", "persist_rel", "center_gain"):
            assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-9), name
    # H is the identity on denoise: gain exactly 1 around its own centre; on the network's points it is 1 too,
    # but its centre gain differs from the network's (3 x ||x|| / ||Lx|| vs 1)
    assert all(r["h_point_gain"] == pytest.approx(1.0, rel=1e-9) for r in own)
    assert all(r["h_center_gain"] == pytest.approx(1.0, rel=1e-9) for r in own)
    assert all(r["center_gain"] > 1.5 for r in own)


def test_own_centres_need_a_budget_search_in_the_image_domain():
    with pytest.raises(ValueError, match="centres='own' needs"):
        ball(2, centres="own", attack={"domain": "measurement"}, noise_domain="measurement",
             radius_kind="relative-x")


def _store(tmp_path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "ball" / "network=exact"
    folder.mkdir(parents=True)
    frame = {k: [r.get(k) for r in rows] for k in rows[0]}
    pq.write_table(pa.table(frame), folder / "part-0.parquet")
    return tmp_path


def test_paired_ball_differences_and_what_the_ball_adds(tmp_path):
    from survey.analysis.paired import linearised_point_gain, paired_ball

    assert float(linearised_point_gain(2.0, 0.25)) == pytest.approx(2.0 / (1 + 1 / 16) ** 0.5)   # 0.970 x
    physics = make_physics("denoise", size=N)
    x = images(4).to(torch.float64)
    net = MatrixNet.with_spectrum(N, torch.linspace(0.2, 3.0, N * N), generator=torch.Generator().manual_seed(1))
    rows = ball(30, radius=[0.25])(context(net, physics, x), generator_for("paired-ball")).rows
    found = paired_ball(_store(tmp_path, rows), threshold=1.5)
    (h,) = [r for r in found if r["comparison"] == "network - H"]
    # the linear network's worst-case gain is ~1.64 on every image: at threshold 1.5 its ball is all-bad, H's
    # (gain 1) never: difference 1,
    # each P exactly what the centre's gain predicts (the ball adds nothing for a linear map)
    assert h["units"] == 4 and h["network_p"] == 1.0 and h["other_p"] == 0.0 and h["difference"] == 1.0
    assert h["network_as_centre"] == 1.0 and h["other_as_centre"] == 1.0
    assert h["p_sign_flip"] == pytest.approx(2 / 16) and h["direction"] == "no difference shown"   # 4 images
    assert h["centres"] == "own"


@pytest.mark.slow   # a ball with the reference solved to a tolerance at every draw (~8 s)
def test_a_converged_reference_scores_centre_and_draws_on_one_solution_map():
    """With the embedded budget search's `reference_tolerance`, the ball's reference numbers come from the
    solver solved to that tolerance (not the unrolled one the context holds), and the rows say so; a cap
    too small to converge is recorded as not converged. The unrolled path records neither."""
    from survey.metrics import psnr
    from survey.solvers.converged import ConvergedCS

    physics, x = mri(), images()
    reference = make_reference(physics, iterations=10)
    ctx = context(IdentityNet(), physics, x, reference)
    kw = dict(with_reference=True, reference_draws=2)
    solved = ball(4, attack={"reference_tolerance": 1e-6, "iterations": 4}, **kw)(ctx, generator_for("solved")).rows
    exact = psnr(ConvergedCS(reference, tolerance=1e-6)(physics.A(x), physics), x).tolist()
    unrolled = psnr(reference(physics.A(x), physics), x).tolist()
    for r in solved:
        assert r["ref_solver_tolerance"] == 1e-6 and r["ref_solver_converged"] is True
        assert r["ref_psnr_clean"] == pytest.approx(exact[r["image_index"]], abs=1e-3)
        assert abs(r["ref_psnr_clean"] - unrolled[r["image_index"]]) > 0.05
    assert sum(r["has_reference"] for r in solved) == 2 * 2 and sum(r["point_gain"] >= 2 for r in solved) == 0
    capped = ball(2, attack={"reference_tolerance": 1e-6, "reference_max_iterations": 2, "iterations": 2}, **kw)(
        ctx, generator_for("solved")).rows
    assert {r["ref_solver_converged"] for r in capped} == {False}
    plain = ball(2, attack={"iterations": 2}, **kw)(ctx, generator_for("solved")).rows
    assert {(r["ref_solver_tolerance"], r["ref_solver_converged"]) for r in plain} == {(None, None)}
    assert plain[0]["ref_psnr_clean"] == pytest.approx(unrolled[plain[0]["image_index"]], abs=1e-6)
