"""Planning: grids expand, shards cover every image once, ids are stable and unique."""

from __future__ import annotations

from survey.plan import expand_grid, plan
from survey.spec import parse_study

STUDY = {
    "name": "p", "seed": 1,
    "networks": [{"name": "dagan"}, {"name": "med50"}],
    "datasets": [{"name": "brain", "count": 10}, {"name": "shepp-logan"}],
    "tasks": [{"name": "attack", "images_per_unit": 4,
               "params": {"lam": [0.01, 0.1], "eta": 1e-3, "snapshot_levels": [0.01, 0.02]}},
              {"name": "attack", "images_per_unit": 3, "params": {"snapshot_levels": [[0.01], [0.05]]},
               "networks": ["med50"], "datasets": ["brain"], "repeats": 2}],
}


def test_grid_expands_lists_but_keeps_list_valued_parameters():
    study = parse_study(STUDY)
    grid = expand_grid(study.tasks[0])
    assert len(grid) == 2
    assert {g["lam"] for g in grid} == {0.01, 0.1}
    assert all(g["snapshot_levels"] == [0.01, 0.02] for g in grid)
    grid2 = expand_grid(study.tasks[1])
    assert sorted(g["snapshot_levels"][0] for g in grid2) == [0.01, 0.05]


def test_plan_covers_images_once_with_stable_unique_ids():
    study = parse_study(STUDY)
    sizes = {"brain": 10, "shepp-logan": 1}
    units = plan(study, sizes)
    # task 0: 2 networks x (3 shards of brain + 1 of shepp-logan) x 2 grid points; task 1: 4 shards x 2 x 2
    assert len(units) == 2 * (3 + 1) * 2 + 4 * 2 * 2
    assert len({u.unit_id for u in units}) == len(units)
    assert [u.unit_id for u in plan(parse_study(STUDY), sizes)] == [u.unit_id for u in units]
    for net in ("dagan", "med50"):
        shards = [(u.image_start, u.image_stop) for u in units
                  if u.network == net and u.task_index == 0 and u.dataset == "brain" and u.params["lam"] == 0.01]
        covered = sorted(i for a, b in shards for i in range(a, b))
        assert covered == list(range(10))


def test_ids_change_with_seed_and_parameters():
    sizes = {"brain": 10, "shepp-logan": 1}
    base = {u.unit_id for u in plan(parse_study(STUDY), sizes)}
    reseeded = {u.unit_id for u in plan(parse_study({**STUDY, "seed": 2}), sizes)}
    assert base.isdisjoint(reseeded)


def test_max_images_runs_a_costly_task_on_the_first_images_only():
    body = {**STUDY, "tasks": [{"name": "attack", "images_per_unit": 4, "params": {}},
                               {"name": "attack", "images_per_unit": 4, "params": {"search": "budget"},
                                "max_images": 2}]}
    units = plan(parse_study(body), {"brain": 10, "shepp-logan": 1})
    capped = [u for u in units if u.task_index == 1]
    assert {(u.dataset, u.image_start, u.image_stop) for u in capped} == {("brain", 0, 2), ("shepp-logan", 0, 1)}
    # a task without the cap keeps its units, and their ids, as before
    uncapped = [u.unit_id for u in units if u.task_index == 0]
    assert uncapped == [u.unit_id for u in plan(parse_study({**body, "tasks": body["tasks"][:1]}),
                                                 {"brain": 10, "shepp-logan": 1})]
