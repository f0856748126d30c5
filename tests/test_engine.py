"""The engine end to end on real Ray: study -> units on actors -> Parquet store, resume, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from survey.engine.scheduler import run_study
from survey.spec import load_study
from survey.store import Store
from tests.conftest import TINY_NET, write_study

STUDY = """
name = "tiny"
seed = 7
store = "results"

[[networks]]
name = "tiny"
factory = "tiny_net.py:build"
kwargs = {{ fail_batch = {fail_batch}, crash_batch = {crash_batch} }}
physics = {{ kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }}

[[datasets]]
name = "ellipses"
split = "test"
count = {count}

[[tasks]]
name = "attack"
images_per_unit = {per_unit}
params = {{ iterations = {iterations}, lam = [0.01, 0.1], eta = 0.01, tau = 0.001, snapshot_levels = [0.05], with_reference = false }}

[engine]
actors_per_network = 2
max_in_flight = 2
retries = 1
"""


def _rows(store_dir, table="attacks"):
    """Every row of `table`, read as a hive-partitioned dataset (`network` comes from the directory)."""
    if not (store_dir / table).is_dir():
        return []
    return pq.read_table(store_dir / table, partitioning="hive").to_pylist()


def test_run_resume_and_store(tmp_path, ray_local):
    path = write_study(tmp_path, STUDY.format(crash_batch=0, fail_batch=0, count=6, per_unit=2, iterations=4))
    study = load_study(path)
    store_dir = tmp_path / "results"
    summary = run_study(study, store_dir=store_dir)
    assert summary.planned == 6 and summary.done == 6 and summary.failed == 0
    rows = _rows(store_dir)
    assert len(rows) == summary.rows > 0
    assert {r["network"] for r in rows} == {"tiny"}
    assert len({r["unit_id"] for r in rows}) == 6
    assert len({r["image_id"] for r in rows}) == 6
    runs = pq.read_table(next((store_dir / "runs").glob("*.parquet"))).to_pylist()
    assert runs[0]["study"] == "tiny" and runs[0]["study_sha256"] == study.digest()
    assert "torch" in runs[0]["packages"] and runs[0]["datasets_sha256"]
    # every row refers to its kept tensors by path and hash
    assert all((store_dir / r["tensor_file"]).exists() for r in rows)
    from survey.engine.progress import study_status
    assert study_status(study, store_dir) == [{"network": "tiny", "task": "attack", "done": 6, "pending": 0,
                                               "failed": 0}]
    again = run_study(study, store_dir=store_dir)
    assert again.skipped == 6 and again.done == 0
    assert len(_rows(store_dir)) == len(rows)


def test_failing_unit_is_recorded_and_survey_completes(tmp_path, ray_local):
    # 4 images, 3 per unit: the first shard (3 images) always fails, the second (1 image) succeeds
    path = write_study(tmp_path, STUDY.format(crash_batch=0, fail_batch=3, count=4, per_unit=3, iterations=3))
    summary = run_study(load_study(path), store_dir=tmp_path / "results")
    assert summary.done == 2 and summary.failed == 2
    ledger = Store(tmp_path / "results").ledger().to_pylist()
    failed = [e for e in ledger if e["status"] == "failed"]
    assert len(failed) == 2
    assert all("TinyNet refuses batches of 3" in e["error"] for e in failed)
    assert all(e["attempts"] == 2 for e in failed)  # retried once, then recorded
    from typer.testing import CliRunner

    from survey.cli import app
    result = CliRunner().invoke(app, ["status", str(path), "--store", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "│ 2    │ 0       │ 2      │" in result.output
    # `survey run` tells a pipeline that units failed: exit 1 (the failed units are tried again, and fail)
    result = CliRunner().invoke(app, ["run", str(path), "--store", str(tmp_path / "results")])
    assert result.exit_code == 1, result.output
    assert "0 units done, 2 already in the store, 2 failed" in result.output


#: TinyNet that, after its first `free` calls in a process, holds every call while the file `hold` exists: a
#: few units finish on each actor and the rest wait for the test, however fast or loaded the machine is.
HELD_NET = TINY_NET + '''

class Held(TinyNet):
    def __init__(self, hold, free):
        super().__init__()
        self.hold, self.free, self.calls = hold, free, 0

    def forward(self, y, physics):
        import os
        import time
        self.calls += 1
        if self.calls > self.free and os.path.exists(self.hold):   # this process holds from here on: says so
            open(f"{self.hold}.held-{os.getpid()}", "w").close()
        while self.calls > self.free and os.path.exists(self.hold):  # released by the test deleting the file
            time.sleep(0.02)
        return super().forward(y, physics)


def build_held(hold, free):
    return Held(hold, free)
'''

#: Calls a held network makes freely per process: the driver's probe and one or two 20-iteration units (about
#: 22 calls each) on each of the 2 actors, never all 24 units.
FREE_CALLS = 60


def _held_study(tmp_path):
    """A 24-unit study whose network holds after FREE_CALLS calls while tmp_path/hold exists (it does when
    this returns); (study path, store, hold file)."""
    hold = tmp_path / "hold"
    body = STUDY.format(crash_batch=0, fail_batch=0, count=12, per_unit=1, iterations=20)
    body = body.replace('factory = "tiny_net.py:build"', 'factory = "tiny_net.py:build_held"')
    body = body.replace("kwargs = { fail_batch = 0, crash_batch = 0 }",
                        f'kwargs = {{ hold = "{hold}", free = {FREE_CALLS} }}')
    body = body.replace("snapshot_levels = [0.05]", "snapshot_levels = [100.0]") + "flush_seconds = 0.2\n"
    hold.touch()
    return write_study(tmp_path, body, net_source=HELD_NET), tmp_path / "results", hold


def _wait_for_first_unit(proc, store_dir, hold, actors: int = 0) -> None:
    """Wait until the ledger holds a unit and `actors` actors hold their calls (`hold` exists): the run is
    surely unfinished, and with every actor held no call returns until the test lets them go."""
    assert hold.exists()
    deadline = time.time() + 600  # a bound for a broken engine only; the state decides, not the clock

    def waiting() -> bool:
        recorded = list((store_dir / "_ledger").glob("part-*.parquet"))
        return not recorded or len(list(hold.parent.glob(f"{hold.name}.held-*"))) < actors

    while time.time() < deadline and proc.poll() is None and waiting():
        time.sleep(0.05)
    assert proc.poll() is None, "the survey stopped before its first unit was recorded"
    assert not waiting(), f"no unit recorded, or fewer than {actors} actors held, within 600 s"


@pytest.mark.slow
def test_sigint_sigterm_and_sigkill_keep_finished_units_and_the_rerun_does_each_unit_once(tmp_path):
    """Ctrl-C to `survey run`, then SIGTERM to the resumed run: each time finished units are flushed, exit 130
    with a resume hint. Then SIGKILL to the next run's whole process group (no handler runs). The last rerun does
    only the rest and exits 0, and every unit is in the ledger and the tables once. The rest are held (not raced):
    each signal always finds work, and it comes while both actors hold their calls, so the driver is waiting on
    calls that do not return. (The three signals in one store: one study and one completing run.)"""
    path, store_dir, hold = _held_study(tmp_path)
    cmd = [sys.executable, "-m", "survey.cli.main", "run", str(path), "--store", str(store_dir)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    kept: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        for marker in hold.parent.glob(f"{hold.name}.held-*"):   # the last run's actors are gone
            marker.unlink()
        killed = signum == signal.SIGKILL   # no pipe then: a survivor of the group could hold it open
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, text=True, start_new_session=True,
                                stderr=subprocess.DEVNULL if killed else subprocess.PIPE)
        _wait_for_first_unit(proc, store_dir, hold, actors=2)
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)   # the driver and everything it started, as an OOM killer would
            proc.wait(timeout=300)
        else:
            proc.send_signal(signum)   # the driver only, as a terminal's Ctrl-C or a scheduler's SIGTERM
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 130, (signum, stderr[-2000:])
            assert stderr.strip().splitlines()[-1] == "interrupted; rerun to resume"
            assert not list(store_dir.rglob(".tmp-*"))
        kept.append(len(Store(store_dir).finished_units()))
        assert 0 < kept[-1] < 24 and kept[-1] >= kept[0], (signum, kept)
    hold.unlink()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{kept[-1]} already in the store" in done.stdout
    ledger = [e for e in Store(store_dir).ledger().to_pylist() if e["status"] == "ok"]
    assert sorted(e["unit_id"] for e in ledger) == sorted({e["unit_id"] for e in ledger})
    assert len(ledger) == 24 and len(Store(store_dir).finished_units()) == 24
    rows = _rows(store_dir)
    keys = [(r["unit_id"], r["image_id"], r.get("restart"), r.get("snapshot"), r.get("iteration")) for r in rows]
    assert len(keys) == len(set(keys)), "rows were duplicated"
    assert {r["unit_id"] for r in rows} == {e["unit_id"] for e in ledger}


def test_unit_that_kills_its_actor_is_failed_after_restarts_and_the_rest_finish(tmp_path, ray_local):
    # 4 images, 3 per unit: shards of 3 images kill the worker process; the last shard (1 image) is fine
    body = STUDY.format(crash_batch=3, fail_batch=0, count=4, per_unit=3, iterations=3) + "max_crashes = 2\n"
    summary = run_study(load_study(write_study(tmp_path, body)), store_dir=tmp_path / "results")
    assert summary.done == 2 and summary.failed == 2
    ledger = Store(tmp_path / "results").ledger().to_pylist()
    failed = [e for e in ledger if e["status"] == "failed"]
    assert len(failed) == 2 and all("died 2 times" in e["error"] for e in failed)
    assert len(_rows(tmp_path / "results")) > 0


def test_more_networks_than_cpus_all_run(tmp_path, ray_local):
    """Three networks (three modalities) on a 2-CPU cluster: actors get CPU shares so all of them fit."""
    body = """
    name = "three"
    [[networks]]
    name = "a"
    factory = "tiny_net.py:build"
    physics = { kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines" }
    [[networks]]
    name = "b"
    factory = "tiny_net.py:build"
    physics = { kind = "radon", size = 16, views = 12 }
    [[networks]]
    name = "c"
    factory = "tiny_net.py:build"
    physics = { kind = "denoise", size = 16, sigma = 0.05 }
    [[datasets]]
    name = "ellipses"
    count = 2
    [[tasks]]
    name = "attack"
    images_per_unit = 2
    params = { iterations = 3, snapshot_levels = [0.5], with_reference = false }
    """
    summary = run_study(load_study(write_study(tmp_path, body)), store_dir=tmp_path / "results")
    assert summary.done == 3 and summary.failed == 0
    assert {r["network"] for r in _rows(tmp_path / "results")} == {"a", "b", "c"}


def test_a_task_that_cannot_fit_the_images_fails_the_study_before_anything_runs(tmp_path):
    """Text 53 pixels wide on 16 x 16 images: refused up front, naming the task and the network, instead of
    being retried once per unit for the whole survey; nothing is written."""
    from survey.spec import StudyError

    text = STUDY.format(crash_batch=0, fail_batch=0, count=2, per_unit=2, iterations=2) + """
[[tasks]]
name = "insertion"
params = { detail = "text", size = 6 }
"""
    path = write_study(tmp_path, text)
    with pytest.raises(StudyError, match=r"\[\[tasks\]\] #2 \(insertion\) on network 'tiny'.*6 x 53 pixels.*16 x 16"):
        run_study(load_study(path), store_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_forgotten_units_are_redone_by_the_next_run_with_the_same_rows(tmp_path, ray_local):
    """`survey forget` then `survey run`: exactly the retracted units run again, and seeded units give back
    the rows they had (no duplicates, nothing else rerun)."""
    path = write_study(tmp_path, STUDY.format(crash_batch=0, fail_batch=0, count=4, per_unit=2, iterations=3))
    store_dir = tmp_path / "results"
    first = run_study(load_study(path), store_dir=store_dir)
    assert first.done == 4
    key = lambda r: (r["unit_id"], r["image_id"], r["lam"], r["snapshot"], r["snapshot_target"])  # noqa: E731
    before = sorted((key(r), r["out_change_rel"]) for r in _rows(store_dir))
    store = Store.open(store_dir)
    chosen = sorted(store.finished_units())[:2]
    assert store.forget(chosen, reason="test") == 2
    store.close()
    assert {r["unit_id"] for r in _rows(store_dir)}.isdisjoint(chosen)
    again = run_study(load_study(path), store_dir=store_dir)
    assert again.done == 2 and again.skipped == 2
    assert sorted((key(r), r["out_change_rel"]) for r in _rows(store_dir)) == before


CHECKPOINT_STUDY = """
name = "notes"
store = "results"

[[networks]]
name = "tiny"
factory = "tiny_net.py:build"
weights = "ckpt.pt"
physics = { kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }

[[datasets]]
name = "folder"
params = { path = "images" }

[[tasks]]
name = "attack"
images_per_unit = 2
params = { iterations = 2, eta = 0.01, tau = 0.001, snapshot_levels = [0.5] }

[engine]
actors_per_network = 1
"""


def test_run_says_what_it_skipped_unwrapped_and_never_reached(tmp_path, ray_local):
    """A checkpoint's weights are unwrapped with a note, a dataset file that cannot be read is named, and
    a snapshot level no search reaches is counted per (network, level); the `runs` row keeps the notes."""
    import json

    import numpy as np
    import torch

    from survey.nets.byo import build_network, resolve_factory

    path = write_study(tmp_path, CHECKPOINT_STUDY)
    net = build_network(resolve_factory("tiny", "tiny_net.py:build", tmp_path))
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "ckpt.pt")
    (tmp_path / "images").mkdir()
    for i in range(2):
        np.save(tmp_path / "images" / f"img{i}.npy", np.random.default_rng(i).random((16, 16)))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    heard: list[str] = []
    summary = run_study(load_study(path), store_dir=tmp_path / "results", on_note=heard.append)
    assert summary.failed == 0 and summary.done >= 1
    assert heard == summary.notes and len(heard) == 3
    assert "'state_dict'" in heard[0] and "module." in heard[1]
    assert heard[2].startswith("dataset 'folder': skipped 1 file: notes.txt")
    assert summary.unreached == {("tiny", 0.5): (2, 2)}
    run = pq.read_table(tmp_path / "results" / "runs").to_pylist()[0]
    assert json.loads(run["notes"]) == heard
    assert json.loads(run["datasets_skipped"])["folder"][0][0] == "notes.txt"
