"""`survey plan STUDY`: units, probed memory, measured cost per unit and expected time, before anything runs;
bad budgets and networks whose probe fails are one line, exit 2."""

import pytest
from typer.testing import CliRunner

from survey.cli import app
from tests.conftest import tiny_study, write_study

TASKS = """
[[tasks]]
name = "attack"
images_per_unit = 1
params = { iterations = 2, lam = 0.01, eta = 0.05, tau = 0.001, snapshot_levels = [0.01], with_reference = false }
"""


def _plan(tmp_path, header='store = "results"', tasks=TASKS, extra=()):
    path = write_study(tmp_path, tiny_study("plan-test", tasks, count=2, header=header))
    return CliRunner().invoke(app, ["plan", str(path), *extra]), tmp_path


def test_plan_prints_units_cost_and_expected_time_and_writes_nothing(tmp_path):
    result, folder = _plan(tmp_path, header='store = "results"\n[engine]\nmemory_gb = 2')
    assert result.exit_code == 0, result.output
    out = result.output
    assert "plan-test on cpu: budget 2.00 GB per actor" in out
    row = next(line for line in out.splitlines() if "attack" in line and "│" in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[:4] == ["tiny", "attack", "2", "2"]          # 2 units of 1 image each
    assert cells[4] == "1"                                       # batch: the unit's one image
    assert cells[6] != "-" and cells[9] != "-"                   # measured s/image and expected time
    assert "expected wall time" in out and "- (use --measure)" not in out
    peak, budget = out.split("peak memory per actor ")[1].split(" GB")[:2]
    assert float(peak) <= float(budget.split("of ")[1])            # the plan's batches honour the budget
    assert not (folder / "results").exists()                     # nothing written to a store
    # each step as it starts (a large study's plan takes minutes): the probe, then each timed image, k of N
    assert "plan-test plan: network 'tiny': building and probing memory" in out
    assert "task 'attack': timing one image (1 of 1)" in out


BALL = TASKS + """
[[tasks]]
name = "ball"
images_per_unit = 2
params = { draws = 4, batch = 3, attack = { iterations = 2 } }
"""


def test_plan_without_measuring_still_sizes_batches(tmp_path):
    result, _ = _plan(tmp_path, tasks=BALL, extra=["--no-measure"])
    assert result.exit_code == 0, result.output
    assert "- (use --measure)" in result.output
    ball = next(line for line in result.output.splitlines() if "ball" in line)
    cells = [c.strip() for c in ball.strip("│┃ ").split("│")]
    assert cells[:5] == ["tiny", "ball", "1", "2", "3"]          # draws per call: the task's batch is the cap


def test_budget_too_small_for_one_image_is_one_line_exit_2(tmp_path):
    result, folder = _plan(tmp_path, header='store = "results"\n[engine]\nmemory_gb = 1e-6', extra=["--no-measure"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "network 'tiny', task 'attack'" in lines[0] and "needs" in lines[0] and "memory_gb" in lines[0]


def test_bad_budget_value_is_one_line_exit_2(tmp_path):
    result, _ = _plan(tmp_path, header='store = "results"\n[engine]\nmemory_gb = -3', extra=["--no-measure"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "engine.memory_gb" in lines[0] and "-3" in lines[0]


def test_network_whose_probe_fails_is_one_line_exit_2(tmp_path):
    # the network refuses batches of 2: the memory probe (batch 1 and 2) or preflight stops it before any work
    body = tiny_study("plan-test", TASKS, count=2).replace(
        'factory = "tiny_net.py:build"\n', 'factory = "tiny_net.py:build"\nkwargs = { fail_batch = 2 }\n')
    path = write_study(tmp_path, body)
    result = CliRunner().invoke(app, ["plan", str(path), "--no-measure"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'tiny'" in lines[0] and "refuses batches of 2" in lines[0]


def test_budget_batches_for_the_engine_give_every_unit_a_batch_within_its_cap(tmp_path):
    from survey.engine.cost import budget_batches
    from survey.engine.preflight import checked_networks
    from survey.plan import plan
    from survey.spec import StudyError, load_study

    path = write_study(tmp_path, tiny_study("plan-test", BALL, count=2, header='store = "results"\n[engine]\nmemory_gb = 1'))
    study = load_study(path)
    handles = checked_networks(study)
    units = plan(study, {"ellipses": 2})
    batches = budget_batches(study, handles, units)
    assert set(batches) == {u.unit_id for u in units}
    assert {batches[u.unit_id] for u in units if u.task == "attack"} == {1}   # the unit's one image
    assert {batches[u.unit_id] for u in units if u.task == "ball"} == {3}     # the ball's own batch caps it
    tiny = study.model_copy(update={"engine": study.engine.model_copy(update={"memory_gb": 1e-6})})
    with pytest.raises(StudyError, match="network 'tiny', task 'attack'"):
        budget_batches(tiny, handles, units)


MATCHED = """
[[tasks]]
name = "attack"
images_per_unit = 1
params = { search = "budget", budgets = [0.02], iterations = 2, restarts = 1, singular_start = false, matched = ["reference", "H"]REF }
"""


def _matched(tmp_path, extra: str = ""):
    from survey.engine.preflight import checked_networks
    from survey.plan import plan
    from survey.spec import load_study

    body = tiny_study("plan-test", MATCHED.replace("REF", extra), count=1).replace("size = 16", "size = 64")
    study = load_study(write_study(tmp_path, body))
    handles = checked_networks(study)
    return study, handles, plan(study, {"ellipses": 1})


@pytest.mark.slow   # probes the backward through 200 unrolled FISTA iterations (~20 s)
def test_a_search_through_the_unrolled_reference_is_sized_by_the_reference(tmp_path):
    """The budget search backpropagates through the unrolled reference (200 FISTA iterations held for the
    backward): a budget that holds the network's image but not the reference's stops the run before Ray,
    naming the reference; solved to a tolerance (implicit gradients, nothing unrolled) it fits."""
    from survey.engine import cost, memory
    from survey.spec import StudyError

    study, handles, units = _matched(tmp_path)
    net, physics = handles["tiny"].build("cpu")
    network = cost.probe_network(study, "tiny", net, physics, "cpu")[True]
    reference = cost.probe_reference(study, "tiny", physics, "cpu")
    need = {who: p.fixed + p.per_image * memory.HEADROOM for who, p in (("net", network), ("ref", reference))}
    assert need["ref"] > 4 * need["net"], (network, reference)   # the unroll's iterates, kept for the backward
    between = (need["net"] + need["ref"]) / 2 / memory.GB

    def at(study, gb):
        return study.model_copy(update={"engine": study.engine.model_copy(update={"memory_gb": gb})})

    with pytest.raises(StudyError, match=r"network 'tiny \(its unrolled reference\)', task 'attack'"):
        cost.budget_batches(at(study, between), handles, units)
    converged, handles, units = _matched(tmp_path / "converged", ", reference_tolerance = 1e-3")
    assert not cost.backprops_reference(units[0])
    assert set(cost.budget_batches(at(converged, between), handles, units).values()) == {1}


def test_tasks_say_whether_their_search_unrolls_the_reference():
    from survey.tasks import make_task

    budget = {"search": "budget", "budgets": [0.02], "iterations": 2}
    assert make_task("attack", **budget, matched=["reference"]).backprops_reference
    assert not make_task("attack", **budget, matched=["reference"], reference_tolerance=1e-3).backprops_reference
    assert not make_task("attack", **budget, matched=["H"]).backprops_reference
    assert make_task("attack", search="paper", target="reference", iterations=2).backprops_reference
    assert not make_task("attack", search="paper", iterations=2).backprops_reference
    search = {"search": "budget", "iterations": 2}   # the ball sets the budget (its level)
    own = make_task("ball", center="worst-case", with_reference=True, attack=search)
    assert own.centre_targets == ("H", "reference") and own.backprops_reference
    assert not make_task("ball", center="worst-case", with_reference=False, attack=search).backprops_reference
    assert not make_task("ball", center="clean", radius_kind="relative-x", with_reference=True).backprops_reference


SPECTRUM = """
[[tasks]]
name = "spectrum"
images_per_unit = 2
params = { k = 1, iterations = 2, block = BLOCK, with_reference = false, upper_bound = false }
"""


def test_the_spectrum_unit_is_sized_per_lanczos_block(tmp_path, monkeypatch):
    """A spectrum unit's images are one Lanczos run of `block` linearisations each: a budget that holds its two
    images at block 1 refuses them at block 4 before Ray, with the memory they need (the network's probe fixed
    at 10 MB + 100 MB per image: a tiny network's own reading moves by more than the margins here)."""
    from survey.engine import cost, memory
    from survey.engine.preflight import checked_networks
    from survey.plan import plan
    from survey.spec import StudyError, load_study

    MB = 1024 ** 2
    probe = memory.MemoryProbe("tiny", 16, True, fixed=10 * MB, per_image=100 * MB, seconds_per_image=0.01,
                               method="vmhwm")
    monkeypatch.setattr(cost, "probe_network", lambda *args, **kwargs: {True: probe, False: probe})

    def budget_batches(block, gb):
        body = tiny_study("plan-test", SPECTRUM.replace("BLOCK", str(block)), count=2)
        study = load_study(write_study(tmp_path / str(block), body))
        study = study.model_copy(update={"engine": study.engine.model_copy(update={"memory_gb": gb})})
        return cost.budget_batches(study, checked_networks(study), plan(study, {"ellipses": 2}))

    gb = (10 + 2 * 2 * 262.5) * MB / memory.GB   # 262.5 MB = 100 MB x 2.1 x 1.25: block 1's two images twice over
    assert set(budget_batches(1, gb).values()) == {2}
    with pytest.raises(StudyError, match=r"\(spectrum\) on network 'tiny': a unit's 2 16 x 16 images are one "
                                         r"network call and need 2.06 GB \(probed\), the memory budget of 1.04 GB "
                                         r"holds 1"):
        budget_batches(4, gb)
