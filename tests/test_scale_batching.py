"""Memory-bounded batching in the engine: a budget smaller than a task's own `batch` makes the actors run
that task with fewer samples per network call (seen by the network itself, on the actor), the rows equal
the task run in-process with that batch written down, and a unit's images that cannot share one call stop
the run before Ray starts."""

import os

import pyarrow.parquet as pq
import pytest
import torch

from survey.engine.scheduler import run_study
from survey.spec import StudyError, load_study
from tests.conftest import write_study

N = 32
MB = 1024 ** 2
CHANNELS = 8 * MB // (N * N * 4)    # an (B, CHANNELS, n, n) float32 block: 8 MB per image

#: out = sum_k w_k H(y): the (B, K, n, n) block is its only large tensor; every call's batch goes to `log`
NET = f'''
import os
import torch
from torch import nn


class Blowup(nn.Module):
    def __init__(self, log, detach=False):
        super().__init__()
        self.detach = detach
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, {CHANNELS}).view(1, {CHANNELS}, 1, 1))
        self.log = log

    def forward(self, y, physics):
        with open(self.log, "a") as f:
            f.write(f"{{os.getpid()}} {{y.shape[0]}}\\n")
        h = physics.H(y).real
        out = (h.expand(-1, self.w.shape[1], -1, -1) * self.w).sum(dim=1, keepdim=True)
        return out.detach() if self.detach else out   # detach: no gradient reaches y (a broken backward)


def build(log, detach=False):
    return Blowup(log, detach)
'''

SEVERITY = dict(families={"spike": [0.0, 0.01, 0.1]}, draws=4, batch=12, with_reference=False)


def _study(folder, memory_gb, images_per_unit=1, task="severity", detach=False, count=2):
    params = ('{ families = { spike = [0.0, 0.01, 0.1] }, draws = 4, batch = 12, with_reference = false }'
              if task == "severity" else '{ iterations = 2, snapshot_levels = [0.01], with_reference = false }')
    body = f'''
name = "batching"
store = "results"

[[networks]]
name = "blowup"
factory = "tiny_net.py:build"
kwargs = {{ log = "{folder / 'calls.log'}", detach = {str(detach).lower()} }}
physics = {{ kind = "mri", size = {N}, ratio = 0.5, mask = "uniform-lines", seed = 0 }}

[[datasets]]
name = "ellipses"
split = "test"
count = {count}

[[tasks]]
name = "{task}"
images_per_unit = {images_per_unit}
params = {params}

[engine]
memory_gb = {memory_gb}
'''
    return write_study(folder, body, net_source=NET)


def _rows(store_dir, table):
    return pq.read_table(store_dir / table, partitioning="hive").to_pylist()


def test_budget_below_the_tasks_batch_runs_smaller_calls_with_the_same_rows(tmp_path, ray_local):
    budget_gb = 40 * MB / 1024 ** 3      # about 3 images of 8 MB (with headroom), far below the batch of 12
    path = _study(tmp_path, budget_gb)
    notes = []
    summary = run_study(load_study(path), store_dir=tmp_path / "results", on_note=notes.append)
    assert summary.failed == 0 and summary.done == 2, summary.failures
    said = [n for n in notes if "samples per network call" in n]
    assert len(said) == 1 and "(severity)" in said[0] and "not its batch = 12" in said[0], notes
    batch = int(said[0].split(": ")[1].split()[0])
    assert 1 <= batch < 8
    # what the network saw on the actors (not the driver's probes): no call above the derived batch
    calls = [line.split() for line in (tmp_path / "calls.log").read_text().splitlines()]
    on_actors = [int(b) for pid, b in calls if int(pid) != os.getpid()]
    assert on_actors and max(on_actors) <= batch
    # the control (next test): with its batch of 12 the actors call the network on the 8 perturbed draws of an
    # image at once (3 levels x 4 draws, the identity level reuses the clean output); the rows equal the task run in-process with `batch` written down
    from survey.engine.worker import SurveyWorker
    from survey.engine.planning import plan_work
    from survey.engine.preflight import checked_networks
    from survey.tasks import TaskContext, generator_for, make_task

    study = load_study(path)
    handles = checked_networks(study)
    work = plan_work(study, handles)
    worker = SurveyWorker(handles["blowup"], "cpu")
    worker._build(work.units[:1])
    stored = {(r["unit_id"], r["image_index"], r["severity"], r["draw"]): r["out_change_rel"]
              for r in _rows(tmp_path / "results", "severity")}
    assert len(stored) == 2 * 3 * 4
    for fixed in (batch, 12):      # severity's rows do not depend on batch: the task's own default agrees too
        again = {}
        for unit in work.units:
            x = torch.from_numpy(work.images[N]["ellipses"][unit.image_start:unit.image_stop])
            ctx = TaskContext(net=worker.net, physics=worker.physics, images=x,
                              image_ids=work.ids["ellipses"][unit.image_start:unit.image_stop], reference=None,
                              network="blowup", dataset="ellipses", unit_id=unit.unit_id)
            result = make_task("severity", **{**unit.params, "batch": fixed})(ctx, generator_for(unit.unit_id))
            again.update({(unit.unit_id, r["image_index"], r["severity"], r["draw"]): r["out_change_rel"]
                          for r in result.rows})
        assert again == stored


@pytest.mark.slow
def test_budget_that_fits_the_batch_leaves_it_alone(tmp_path, ray_local):
    path = _study(tmp_path, 4)
    notes = []
    summary = run_study(load_study(path), store_dir=tmp_path / "results", on_note=notes.append)
    assert summary.failed == 0 and not [n for n in notes if "samples per network call" in n]
    calls = [line.split() for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert max(int(b) for pid, b in calls if int(pid) != os.getpid()) == 8   # 2 levels x 4 draws in one call


#: out = sum_k w_k H(y) with its (B, CHANNELS, n, n) block kept for backward, and backward building one more such
#: block while the first lives: 2 blocks (16 MB) per image at the peak, and no large buffer is freed before another
#: is allocated within a call, so the resident-set probe reads the same on every run (Blowup frees its block before
#: its backward allocates one; whether malloc reuses those pages depends on the process's history, so its probe
#: read 8-24 MB per image).
HELD_NET = f'''
import os
import torch
from torch import nn


class _Held(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w):
        block = h.expand(-1, w.shape[1], -1, -1) * w
        ctx.save_for_backward(block, w)
        return block.sum(dim=1, keepdim=True)

    @staticmethod
    def backward(ctx, grad):
        block, w = ctx.saved_tensors
        again = grad.expand_as(block) * w
        return again.sum(dim=1, keepdim=True), None


class Held(nn.Module):
    def __init__(self, log, detach=False):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, {CHANNELS}).view(1, {CHANNELS}, 1, 1))
        self.log = log

    def forward(self, y, physics):
        with open(self.log, "a") as f:
            f.write(f"{{os.getpid()}} {{y.shape[0]}}\\n")
        return _Held.apply(physics.H(y).real, self.w)


def build(log, detach=False):
    return Held(log)
'''


def test_unit_images_that_cannot_share_one_call_stop_before_ray(tmp_path):
    # the attack's unit is one call of its 4 images forward + backward, 16 MB per image (HELD_NET), planned at
    # 16 x WORKING_SET 1.2 x HEADROOM 1.25 = 24 MB; 60 MB holds floor(60 / 24) = 2 of them (3 without the 1.2)
    path = _study(tmp_path, 60 * MB / 1024 ** 3, images_per_unit=4, task="attack", count=4)
    (tmp_path / "tiny_net.py").write_text(HELD_NET)
    with pytest.raises(StudyError) as err:
        run_study(load_study(path), store_dir=tmp_path / "results")
    message = str(err.value)
    assert "\n" not in message and "(attack) on network 'blowup'" in message, message
    fits = int(message.split("set images_per_unit = ")[1].split()[0])
    assert fits == 2 and "holds 2:" in message, message
    assert not (tmp_path / "results").exists()


def test_budget_too_small_for_one_image_is_one_line_before_any_work(tmp_path):
    path = _study(tmp_path, 1 * MB / 1024 ** 3)
    with pytest.raises(StudyError) as err:
        run_study(load_study(path), store_dir=tmp_path / "results")
    message = str(err.value)
    assert "\n" not in message and "network 'blowup', task 'severity'" in message and "needs" in message
    assert not (tmp_path / "results").exists()


def test_survey_run_with_a_budget_too_small_for_one_image_is_one_line_exit_2(tmp_path):
    from typer.testing import CliRunner

    from survey.cli import app

    path = _study(tmp_path, 1e-6)
    result = CliRunner().invoke(app, ["run", str(path), "--store", str(tmp_path / "results")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "network 'blowup', task 'severity'" in lines[0] and "memory_gb" in lines[0]
    assert not (tmp_path / "results").exists()


def test_survey_run_with_a_network_whose_memory_probe_fails_is_one_line_exit_2(tmp_path):
    # the network answers forward calls (the preflight's probe) but no gradient reaches its input: the memory
    # probe's forward + backward at the study's size fails
    from typer.testing import CliRunner

    from survey.cli import app

    path = _study(tmp_path, 4, task="attack", detach=True)
    result = CliRunner().invoke(app, ["run", str(path), "--store", str(tmp_path / "results")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "network 'blowup'" in lines[0] and "memory probe at 32 x 32 failed" in lines[0]
    assert not (tmp_path / "results").exists()
