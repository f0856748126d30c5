"""Study files: valid ones parse, bad ones fail before any work with file, field and value named."""

from __future__ import annotations

import textwrap

from pathlib import Path

import pytest

from survey.spec import StudyError, load_study

def write(tmp_path, body: str):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(body))
    return path


BASE = """
name = "t"
seed = 3
[[networks]]
name = "dagan"
[[datasets]]
name = "shepp-logan"
[[tasks]]
name = "attack"
params = { iterations = 5, lam = [0.01, 0.1] }
"""


def test_valid_study_parses(tmp_path):
    study = load_study(write(tmp_path, BASE))
    assert study.name == "t" and study.seed == 3
    assert study.networks[0].name == "dagan"
    assert study.tasks[0].params["lam"] == [0.01, 0.1]
    assert study.base_dir == tmp_path
    assert len(study.digest()) == 64


@pytest.mark.parametrize("body, expected", [
    (BASE.replace('name = "dagan"', 'name = "nosuchnet"'), ["networks[0]", "nosuchnet"]),
    (BASE.replace('name = "shepp-logan"', 'name = "nosuchdata"'), ["datasets[0]", "nosuchdata"]),
    (BASE.replace('name = "attack"', 'name = "nosuchtask"'), ["nosuchtask"]),
    (BASE.replace("seed = 3", "seed = 'three'"), ["seed", "three"]),
    (BASE + "\nbogus = 1\n", ["bogus"]),
    (BASE.replace('[[datasets]]\nname = "shepp-logan"', '[[datasets]]\nname = "brain"\ncount = 0'), ["count", "0"]),
    (BASE.replace('name = "dagan"', 'name = "mine"\nfactory = "net.py:build"'), ["mine", "physics"]),
    ("name = 'x'\n[[networks]\n", ["not valid TOML"]),
])
def test_bad_study_names_field_and_value(tmp_path, body, expected):
    path = write(tmp_path, body)
    with pytest.raises(StudyError) as err:
        load_study(path)
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(StudyError, match="not found"):
        load_study(tmp_path / "absent.toml")


def test_task_restricted_to_undeclared_network_fails(tmp_path):
    body = BASE + 'networks = ["med50"]\n'
    with pytest.raises(StudyError, match="med50"):
        load_study(write(tmp_path, body))


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parents[1] / "tasks").glob("*.toml")))
def test_example_studies_validate_and_plan(name):
    """Every committed study loads, plans, builds each task and passes preflight (networks, companions)."""
    from survey.plan import plan
    from survey.tasks import make_task

    study = load_study(Path(__file__).parents[1] / "tasks" / name)
    units = plan(study, {d.name: d.count or 24 for d in study.datasets})
    assert units
    for unit in {(u.task, repr(sorted(u.params.items()))): u for u in units}.values():
        make_task(unit.task, **unit.params)  # every grid point is a valid task
    from survey.engine.networks import resolve_networks
    from survey.engine.preflight import preflight
    preflight(study, units, resolve_networks(study))  # networks answer a probe; every task fits their images
    if name == "paper.toml":
        assert len(study.networks) == 6
        attack_images = sum(u.image_count for u in units if u.task == "attack")
        assert attack_images >= 1000
        ball_draws = sum(u.image_count * u.params["draws"] * len(u.params["radius"])
                         for u in units if u.task == "ball")
        assert ball_draws >= 100_000


def test_correction_kind_and_trained_on_fields(tmp_path):
    study = load_study(write(tmp_path, BASE))
    assert study.correction == "holm" and study.datasets[0].kind is None and study.datasets[0].loader == "shepp-logan"
    assert study.networks[0].trained_on is None
    body = BASE.replace('name = "shepp-logan"', 'name = "phantoms"\nkind = "shepp-logan"')
    body = 'correction = "none"\n' + body.replace('name = "dagan"', 'name = "dagan"\ntrained_on = ["brain"]')
    study = load_study(write(tmp_path, body))
    assert study.correction == "none" and study.datasets[0].name == "phantoms"
    assert study.datasets[0].loader == "shepp-logan" and study.networks[0].trained_on == ["brain"]
    with pytest.raises(StudyError, match=r"correction.*'bonferroni'"):
        load_study(write(tmp_path, 'correction = "bonferroni"\n' + BASE))
    # criteria keep datasets apart by default
    criteria = BASE + '[[criteria]]\nname = "c"\ntable = "attacks"\nbad = "true"\nmax_upper = 0.1\n'
    assert load_study(write(tmp_path, criteria)).criteria[0].by == ["network", "dataset"]
