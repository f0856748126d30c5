"""`survey tasks` lists every registered task (variants too); `survey tasks show NAME` every parameter."""

from __future__ import annotations

from typer.testing import CliRunner

from survey.cli import app
from survey.tasks import task_names

runner = CliRunner()


def test_the_list_names_every_task_its_table_and_the_budget_variant():
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    listed = {line.split()[0] for line in lines}
    assert listed == set(task_names())
    budget = [line for line in lines if line.startswith("attack (search = 'budget')")]
    assert len(budget) == 1 and budget[0].split()[4] == "attacks"


def test_show_prints_each_parameter_with_default_and_meaning():
    result = runner.invoke(app, ["tasks", "show", "attack"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "writes table 'attacks'" in out and "attack with search = 'budget'" in out
    paper, budget = out.split("attack with search = 'budget'")
    assert "  eta = 0.001: " in paper and "budgets" not in paper   # the paper search takes no budgets
    assert "  budgets = (0.01, 0.02, 0.05): eps values" in budget and "  eta = " not in budget
    ball = runner.invoke(app, ["tasks", "show", "ball"]).stdout
    assert "  attack = {}: keyword parameters of the embedded" in ball and "(undocumented)" not in ball


def test_an_unknown_task_is_one_line_exit_2():
    result = runner.invoke(app, ["tasks", "show", "atack"])
    assert result.exit_code == 2 and result.stderr.strip().startswith("error: unknown task 'atack'")


def test_with_a_study_the_plugins_tasks_are_listed(tmp_path):
    from test_plugins import lab

    from survey import plugins
    from survey.analysis.sections import SECTIONS
    from survey.perturb import FAMILIES
    from survey.physics import PHYSICS
    from survey.tasks import TASKS

    study = lab(tmp_path / "lab")
    try:
        result = runner.invoke(app, ["tasks", "show", "lab-gain-check", "--study", str(study)])
        assert result.exit_code == 0, result.output
        assert "writes table 'lab_gain'" in result.stdout and "  severity = 0.1: " in result.stdout
    finally:
        for registry, name in ((TASKS, "lab-gain-check"), (FAMILIES, "lab-gain"), (PHYSICS, "lab-blur"),
                               (SECTIONS, "lab_gain")):
            registry.remove(name)
        plugins._LOADED.clear()
