"""The budget search levels off, searches local artefacts, and attacks the reference solved to a tolerance
(tasks/budget.py, tasks/budget_attack.py): planted answers and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from survey.cli import app
from survey.metrics import norms
from survey.nets.exact import MatrixNet
from survey.physics import make_physics
from survey.solvers.cs import make_reference
from survey.tasks import make_task
from survey.tasks.base import TaskContext
from survey.tasks.budget import worst_case

N = 16


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(count: int = 2, seed: int = 0) -> torch.Tensor:
    return 0.2 + 0.8 * torch.rand(count, 1, N, N, dtype=torch.float64, generator=gen(seed))


WINDOW = (slice(2, 6), slice(9, 13))


class LocalBump(nn.Module):
    """f(y) = y + (g . y) g + 0.5 y on a 4 x 4 window: a global mode of gain 2 (g, unit, zero on the
    window) and a local amplification of gain 1.5. The l2 worst case is g, spread over the image; the
    largest local change is inside the window (patch gain 1.5 x 4 against about 2)."""

    def __init__(self):
        super().__init__()
        g = torch.cos(torch.linspace(0, 3, N * N, dtype=torch.float64)).view(1, 1, N, N)
        self.window = torch.zeros(1, 1, N, N, dtype=torch.float64)
        self.window[..., WINDOW[0], WINDOW[1]] = 1
        g = g * (1 - self.window)
        self.g = g / norms(g)

    def forward(self, y, physics):
        along = (y * self.g).flatten(1).sum(1).view(-1, 1, 1, 1)
        return y + along * self.g + 0.5 * self.window * y


def test_a_planted_local_bump_is_found_by_the_patch_objective_and_missed_by_l2():
    physics, x, net = make_physics("denoise", size=N).to(torch.float64), images(), LocalBump()
    found = {objective: worst_case(net, physics, x, (0.05,), iterations=40, restarts=2, objective=objective,
                                   window=4, generator=gen()) for objective in ("l2", "patch")}

    def inside(r):
        return (norms(r[0] * net.window) / norms(r[0])).square()

    # l2: the global mode (gain 2 ||x|| / ||f(x)||), with almost nothing in the window.
    exact_l2 = 2 * norms(x) / norms(net(x, physics))
    assert torch.allclose(found["l2"].gain[0], exact_l2, rtol=1e-3)
    assert float(inside(found["l2"].r).max()) < 0.05
    # patch: the window, where the local change is 1.5 x (n / window) = 6 times the relative r.
    exact_patch = 1.5 * (N / 4) * norms(x) / norms(net(x, physics))
    assert torch.allclose(found["patch"].gain[0], exact_patch, rtol=2e-2)
    assert float(inside(found["patch"].r).min()) > 0.95
    assert bool((found["patch"].gain[0] > 2 * found["l2"].gain[0]).all())


def test_until_level_stops_a_converged_search_early_and_says_when_the_cap_cut_it_short():
    physics, x = make_physics("denoise", size=N), images()
    net = MatrixNet.with_spectrum(N, torch.linspace(0.2, 3.0, N * N), generator=gen(1))
    found = worst_case(net, physics, x, (0.01, 0.05), iterations=200, restarts=1, until_level=True, generator=gen())
    assert found.iterations_run < 200 and bool(found.levelled.all())
    exact = torch.linalg.svdvals(net.matrix)[0] * norms(x) / norms(x.flatten(1) @ net.matrix.T)
    # Levelled off means the last quarter added < 1%: a slow ascent can still stop a few % short.
    assert 0.95 < float((found.gain / exact).min()) and float((found.gain / exact).max()) <= 1 + 1e-9
    cut = worst_case(net, physics, x, (0.01,), iterations=3, restarts=1, until_level=True, generator=gen())
    assert cut.iterations_run == 3 and not bool(cut.levelled.any())


def context(physics, x):
    return TaskContext(net=MatrixNet.with_spectrum(N, torch.linspace(0.5, 2.0, N * N), generator=gen(2)),
                       physics=physics, images=x, image_ids=["a", "b"], reference=make_reference(physics),
                       network="planted", dataset="noise", unit_id="u")


def test_the_reference_solved_to_a_tolerance_records_whether_each_row_converged():
    physics = make_physics("mri", size=N, ratio=0.4).to(torch.float64)
    x = images()
    params = dict(search="budget", budgets=[0.02], iterations=2, restarts=1, singular_start=True,
                  singular_iterations=2, matched=["reference"], reference_tolerance=1e-5)
    rows, _ = make_task("attack", **params)(context(physics, x), gen(3))
    ref = [row for row in rows if row["attacked"] == "reference"]
    assert len(ref) == 2 and all(row["solver_converged"] is True and row["solver_iterations"] > 0 for row in ref)
    assert all(row["solver_tolerance"] == 1e-5 for row in ref)
    assert all(row["solver_converged"] is None for row in rows if row["attacked"] == "network")
    # The l2 objective: gain_l2 is the gain (the reference's rescored by a fresh solve to the tolerance).
    assert all(row["gain_l2"] == pytest.approx(row["gain"], rel=1e-3) and row["gain_patch"] > 0 for row in rows)
    capped = dict(params, reference_max_iterations=2, singular_start=False, iterations=1)
    rows, _ = make_task("attack", **capped)(context(physics, x), gen(3))
    assert all(row["solver_converged"] is False for row in rows if row["attacked"] == "reference")


@pytest.mark.parametrize("bad,match", [
    (dict(reference_tolerance=0.7), "reference_tolerance"), (dict(reference_tolerance=-1e-3), "reference_tolerance"),
    (dict(reference_tolerance=1e-4, reference_max_iterations=0), "reference_max_iterations"),
    (dict(window=1), "window"), (dict(objective="roi", roi=[0, 0, 4]), "roi"), (dict(objective="max"), "objective"),
    (dict(level_rise=0.0), "level_rise"), (dict(level_rise=1.5), "level_rise"),
])
def test_bad_budget_search_settings_name_the_parameter(bad, match):
    with pytest.raises(ValueError, match=match):
        make_task("attack", search="budget", **bad)


@pytest.mark.parametrize("params,match", [(dict(objective="roi", roi=[10, 10, 8, 4]), "roi"),
                                          (dict(objective="patch", window=17), "window")])
def test_a_window_or_roi_that_does_not_fit_is_refused_before_work(params, match):
    task = make_task("attack", search="budget", **params)
    with pytest.raises(ValueError, match=match):
        task.check_image_size(N, N)


def test_cli_exits_2_naming_the_parameter(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text('name = "t"\n[[networks]]\nname = "dagan"\n[[datasets]]\nname = "shepp-logan"\n'
                     '[[tasks]]\nname = "attack"\nparams = { search = "budget", reference_tolerance = 0.9 }\n')
    result = CliRunner().invoke(app, ["run", str(study), "--store", str(tmp_path / "store")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "reference_tolerance" in lines[0]
