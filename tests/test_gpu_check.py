"""The GPU check (benchmarks/gpu_check.sh) dry-runs on CPU end to end, and its parts judge what they should.

The dry run (--device cpu --small, ray and duckdb left out as on the device machine) must write every file,
pass, and show the controls: the same computation on the "device" (the CPU) gives identical rows for every
task and operator kind, and every zoo network's f(Ax) is identical. Nothing here needs a GPU.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_agree, gpu_speed
from benchmarks.gpu_common import outcome_of_error
from benchmarks.gpu_report import verdict
from benchmarks.gpu_tests import MARKER, cuda_tests

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
FILES = ("gpu_check.log", "gpu_check.json", "gpu_check.md", "gpu_tests.json", "gpu_agree.json", "gpu_speed.json",
         "gpu_pytest.txt")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_out")
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--small", "--out", str(out), "--without",
                           "ray,duckdb", "--cpu-threads", "1", "--wheels", str(out / "no-wheels")],
                          capture_output=True, text=True, timeout=600)
    return proc, out, json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else None


@pytest.mark.slow
def test_the_dry_run_passes_and_writes_every_file(dry_run):
    proc, out, report = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert report["passed"] and report["problems"] == []
    log = (out / "gpu_check.log").read_text()
    assert "module ray: missing" in log and "module duckdb: missing" in log
    assert "/survey/tasks/__init__.py" in log and str(ROOT / "tasks") not in log.split("survey.tasks from ")[1].split()[0]


@pytest.mark.slow
def test_the_cuda_marked_tests_are_found_and_skip_on_cpu(dry_run):
    _, _, report = dry_run
    ids = cuda_tests()
    assert any("test_physics.py::test_operators_run_on_the_gpu" in i for i in ids)
    cases = report["tests"]["cases"]
    assert cases and {c["id"].split("::")[1].split("[")[0] for c in cases} == {i.split("::")[-1] for i in ids}
    assert all(c["outcome"] == "skipped" and MARKER in c["reason"] for c in cases)


@pytest.mark.slow
def test_every_task_and_kind_runs_and_the_cpu_control_is_exact(dry_run):
    from survey.physics import physics_kinds
    from survey.tasks import task_names

    _, _, report = dry_run
    units = report["agree"]["units"]
    assert sorted(u["task"] for u in units) == task_names()
    assert {u["kind"] for u in units} == set(physics_kinds())
    for u in units:
        assert u["status"] == "agree" and u["max_rel"] == 0.0 and u["rows"] > 0, u
    zoo = report["agree"]["zoo"]
    assert [z["network"] for z in zoo] == gpu_agree.SMALL_ZOO
    assert all(z["status"] == "agree" and z["rel_diff_tf32"] == z["rel_diff_no_tf32"] == 0.0 for z in zoo)
    assert [w["status"] for w in report["agree"]["worker"]] == ["ran"]


@pytest.mark.slow
def test_every_throughput_has_a_best_batch_and_its_ratio(dry_run):
    _, out, report = dry_run
    benches = report["speed"]["benchmarks"]
    assert set(benches) == {"attack", "ball", "reference", "spectrum", "rare"}
    specs = gpu_speed.benchmarks(small=True)
    for name, entry in benches.items():
        best, cpu = entry["device"]["best"], entry["cpu"]
        assert entry["status"] == "ok" and best["rate"] > 0 and cpu["rate"] > 0
        assert best["batch"] in specs[name]["batches"] and cpu["batch"] == specs[name]["cpu_batch"]
        assert best["rate"] == max(p["rate"] for p in entry["device"]["points"])
        assert entry["ratio"] == pytest.approx(best["rate"] / cpu["rate"])
        assert entry["device"]["limited_by"]
        if name in gpu_speed.BARE:
            assert entry["bare_rate"] > 0 and entry["task_over_bare"] == pytest.approx(best["rate"] / entry["bare_rate"])
    table = (out / "gpu_check.md").read_text()
    assert "| benchmark | unit | device, best batch |" in table and "Verdict: **PASS**" in table
    for name in benches:
        assert f"\n| {name} | " in table


# -- the parts, cheaply ----------------------------------------------------------------------------------


def test_bad_arguments_exit_2_in_one_line(tmp_path):
    for args, word in ((["--device", "tpu"], "--device"), (["--budget", "soon"], "--budget"), (["--frobnicate"], "unknown")):
        proc = subprocess.run(["bash", str(SCRIPT), *args, "--out", str(tmp_path)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and word in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cuda_marked_tests_are_found_by_their_skip_reason(tmp_path):
    (tmp_path / "test_a.py").write_text(textwrap.dedent(f'''
        import pytest, torch
        cuda = pytest.mark.skipif(True, reason="other")

        @pytest.mark.skipif(not torch.cuda.is_available(), reason="{MARKER}")
        def test_one(): pass

        def test_two(): pass

        @pytest.mark.skipif(not torch.cuda.is_available(), reason="{MARKER}")
        class TestGpu:
            def test_three(self): pass
        '''))
    (tmp_path / "test_b.py").write_text(f'import pytest\npytestmark = pytest.mark.skipif(True, reason="{MARKER}")\n'
                                        'def test_four(): pass\n')
    ids = cuda_tests(tmp_path)
    rel = tmp_path.name
    assert ids == [f"{rel}/test_a.py::test_one", f"{rel}/test_a.py::TestGpu::test_three", f"{rel}/test_b.py::test_four"]


def test_rows_are_compared_within_tolerance_column_by_column():
    rows = [{"a": 1.0, "b": "x", "c": None, "d": float("nan"), "n": 3}]
    tensors = {"t": torch.ones(1, 2, dtype=torch.float64)}
    same = gpu_agree.compare((rows, tensors), ([dict(rows[0])], {"t": tensors["t"].clone()}))
    assert same["equal"] and same["max_rel"] == 0.0
    close = gpu_agree.compare((rows, tensors), ([{**rows[0], "a": 1.0 + 1e-9}], tensors))
    assert close["equal"] and 0 < close["max_rel"] < gpu_agree.RTOL and close["worst"] == "a"
    off = gpu_agree.compare((rows, tensors), ([{**rows[0], "a": 1.01, "n": 4}], {"t": tensors["t"] * 1.1}))
    assert not off["equal"] and set(off["mismatched"]) == {"a", "n", "tensor t"}
    assert not gpu_agree.compare((rows, tensors), ([{**rows[0], "b": "y"}], tensors))["equal"]
    assert not gpu_agree.compare((rows, tensors), ([], tensors))["equal"]


def test_a_missing_module_is_a_skip_that_names_it(monkeypatch):
    def needs_duckdb(*args):
        try:
            import duckdb_not_here  # noqa: F401
        except ModuleNotFoundError as err:
            raise ValueError("wrapped") from ModuleNotFoundError("No module named 'duckdb.x'", name="duckdb.x")
    monkeypatch.setattr(gpu_agree, "_run_example", needs_duckdb)
    unit = gpu_agree.check_unit("attack", "mri", torch.device("cpu"))
    assert unit["status"] == "skipped" and "'duckdb'" in unit["reason"]
    assert outcome_of_error(RuntimeError("boom"))["status"] == "error"


def test_left_out_modules_cannot_be_imported():
    code = "import json\ntry:\n    import colorsys\nexcept ModuleNotFoundError as e:\n    print('refused', e.name)\n"
    env = {"GPU_CHECK_WITHOUT": "colorsys,ray", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", f"import runpy; runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_without.py')!r})\n"
                           + code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip() == "refused colorsys", proc.stderr


def test_the_verdict_names_each_problem():
    tests = {"status": "failed", "reason": "some did not pass on cuda", "counts": {"failed": 1}}
    agree = {"units": [{"task": "ball", "kind": "radon", "status": "differ", "worst": "gain", "native": "ran"},
                       {"task": "rare", "kind": "mri", "status": "skipped", "reason": "needs ray"}],
             "zoo": [{"network": "dagan", "status": "differ", "reason": "TF32 off"}], "worker": []}
    problems = verdict(tests, agree, None)
    assert any("CUDA-marked" in p for p in problems) and any("ball on radon" in p for p in problems)
    assert any("zoo dagan" in p for p in problems) and "throughput: did not finish" in problems
    assert not any("rare" in p for p in problems)


class FakeClock:
    """perf_counter for gpu_speed, advanced by the fake measurements (no wall-clock dependence)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def _fake(clock: FakeClock, cost, oom_at: int | None = None):
    def measure(net, physics, images, batch, warm):
        if oom_at is not None and batch >= oom_at:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        clock.now += cost(batch)
        return float(batch)
    return measure


def test_the_batch_sweep_stops_at_a_plateau_or_at_memory(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(gpu_speed, "time", clock)
    cpu = torch.device("cpu")
    spec = {"batches": [1, 4, 16, 64, 256, 1024], "measure": _fake(clock, lambda b: 1 + b / 2)}
    found = gpu_speed.sweep(spec, (None, None, None), cpu, seconds=1e9)
    rates = [p["rate"] for p in found["points"]]
    assert [p["batch"] for p in found["points"]] == [1, 4, 16, 64, 256]  # 256 is < 5% over 64: stop
    assert found["best"]["batch"] == 256 and rates == sorted(rates) and found["limited_by"].startswith("saturated")
    spec = {"batches": [1, 4, 16, 64], "measure": _fake(clock, lambda b: 1.0, oom_at=16)}
    found = gpu_speed.sweep(spec, (None, None, None), cpu, seconds=1e9)
    assert found["best"]["batch"] == 4 and found["limited_by"] == "memory: out of device memory at batch 16"
    assert math.isclose(found["best"]["rate"], 4.0)


# -- on a CUDA device (gpu_check.sh runs these in its first step; here they skip) -------------------------

def _units() -> list[tuple[str, str]]:
    from survey.physics import physics_kinds
    from survey.tasks import task_names

    kinds = physics_kinds()
    return [(name, kinds[i % len(kinds)]) for i, name in enumerate(task_names())]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name,kind", _units())
def test_a_task_on_cuda_gives_the_cpu_rows_and_runs_with_a_cuda_generator(name, kind):
    unit = gpu_agree.check_unit(name, kind, torch.device("cuda"))
    assert unit["status"] == "agree", {k: v for k, v in unit.items() if k != "native_error"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_survey_worker_runs_a_unit_on_cuda():
    (row,) = gpu_agree.check_worker(torch.device("cuda"), ["dagan"])
    assert row["status"] == "ran" and row["rows"] > 0, row.get("error")
