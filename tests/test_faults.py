"""The fault battery: misbehaving networks and damaged stores, each through the probe, the worker, `survey run`,
`estimate`, `report` and `query`. Asserted every time: the exit code, one line naming the culprit, nothing
already written lost, no verdict from invalid rows.

Cheap on purpose: 16 x 16 phantoms, a few iterations, in-process workers (no Ray) wherever the engine allows;
the Ray part is one study shared by its tests.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from survey.cli import app
from survey.engine.finite import FiniteGuard, NonFiniteError, check_rows
from survey.engine.networks import resolve_network
from survey.engine.planning import plan_work
from survey.engine.preflight import checked_networks
from survey.engine.worker import SurveyWorker
from survey.spec import StudyError, load_study
from survey.store import Store, quarantine_name
from tests.faults import ATTACK, SWEEP, faulty_study, network_entry

runner = CliRunner()


def _worker_outcomes(folder: Path, kind: str, tasks: str, after: int = 2):
    """Run every unit of a one-network study in-process (the worker Ray would start); their outcomes."""
    study = load_study(faulty_study(folder, network_entry("net", kind, after), tasks))
    handle = resolve_network(study.networks[0], study.base_dir)
    work = plan_work(study, {"net": handle})
    worker = SurveyWorker(handle, "cpu")
    return worker.run(work.units, work.images[16], work.ids)


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# -- networks that turn non-finite after the probe -------------------------------------------------------------

@pytest.mark.parametrize("kind,word", [("nan", "NaN"), ("inf", "Inf")])
def test_a_network_turning_non_finite_fails_its_unit_with_one_line(tmp_path, kind, word):
    outcomes = _worker_outcomes(tmp_path, kind, ATTACK)
    assert outcomes and all(o.error is not None and not o.rows for o in outcomes)
    for o in outcomes:
        line = _one_line(o.error)
        assert "network 'net'" in line and o.unit.unit_id in line and word in line
        assert o.retry is False   # its seeded input would meet it again: no retries spent


def test_a_wrong_batch_of_images_mid_run_fails_its_unit_with_one_line(tmp_path):
    tasks = ATTACK.replace("images_per_unit = 2", "images_per_unit = 3")
    study = load_study(faulty_study(tmp_path, network_entry("net", "batchshape", 3), tasks, count=3))
    handle = resolve_network(study.networks[0], study.base_dir)   # the probe's batches (2, 1) pass
    work = plan_work(study, {"net": handle})
    [outcome] = SurveyWorker(handle, "cpu").run(work.units, work.images[16], work.ids)
    line = _one_line(outcome.error)
    assert "network 'net'" in line and "batch of 3" in line and outcome.unit.unit_id in line and not outcome.retry


def test_a_sweep_does_not_swallow_non_finite_output_as_a_skip(tmp_path):
    outcomes = _worker_outcomes(tmp_path, "sweepnan", SWEEP, after=0)
    assert [o.rows for o in outcomes] == [[]]
    assert "non-finite" in outcomes[0].error and "network 'net'" in outcomes[0].error


def test_a_healthy_network_passes_the_guard_and_the_row_check(tmp_path):
    outcomes = _worker_outcomes(tmp_path, "ok", ATTACK + SWEEP)
    assert all(o.error is None and o.rows for o in outcomes)


def test_row_check_names_columns_and_respects_explained_skips():
    rows = [{"psnr": math.nan, "skipped": "fixed sampling", "error": ""},
            {"psnr": math.nan, "skipped": "", "error": "RuntimeError: other mask"},
            {"psnr": math.inf, "severity": math.inf, "gain": 1.0}]   # Inf in a row is a value: it compares right
    check_rows("n", "u", "sweep", rows)
    with pytest.raises(NonFiniteError, match=r"network 'n', unit u \(attack\): NaN .* in gain \(1 of 2"):
        check_rows("n", "u", "attack", [{"gain": math.nan}, {"gain": 2.0}])


def test_the_guard_forwards_attributes_and_counts_calls():
    net = torch.nn.Identity()
    net.fixed_sampling = True
    guard = FiniteGuard(net, "id")
    guard.start("u1")
    assert guard.fixed_sampling is True and guard(torch.ones(2, 1, 4, 4)).shape == (2, 1, 4, 4)
    with pytest.raises(NonFiniteError, match=r"at call 2 of unit u1 \(a batch of 3\)"):
        guard(torch.full((3, 1, 4, 4), math.nan))


# -- the probe: outputs it refuses, advice by cause --------------------------------------------------------------

def _probe_error(folder: Path, entry: str) -> str:
    study = load_study(faulty_study(folder, entry, ATTACK))
    with pytest.raises(StudyError) as info:
        checked_networks(study)
    return _one_line(str(info.value))


def test_probe_refuses_complex_and_integer_outputs(tmp_path):
    assert "complex" in _probe_error(tmp_path / "c", network_entry("c", "complex")) \
        and ".real" in _probe_error(tmp_path / "c", network_entry("c", "complex"))
    message = _probe_error(tmp_path / "i", network_entry("i", "int"))
    assert "torch.int64" in message and "float32" in message


def test_probe_states_expected_and_got_shape_and_points_to_size(tmp_path):
    message = _probe_error(tmp_path, network_entry("s", "shape", size=16))
    assert "(2, 1, 15, 15)" in message and "expected (2, 1, 16, 16)" in message and "size = 16" in message


def test_probe_names_the_batch_size_that_fails(tmp_path):
    message = _probe_error(tmp_path, network_entry("b", "batch", after=1))
    assert "works on a batch of 2 measurements but fails on a batch of 1" in message
    assert "any batch size" in message


def test_a_factory_missing_an_argument_hears_of_kwargs(tmp_path):
    entry = ('[[networks]]\nname = "w"\nfactory = "faulty.py:needs_width"\n'
             'physics = { kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }\n\n')
    message = _probe_error(tmp_path, entry)
    assert "width" in message and "kwargs" in message


def _export(path: Path, size: int, dynamic_batch: bool) -> None:
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.n = size

        def forward(self, y):
            x = y.real if torch.is_complex(y) else y
            return x.abs().reshape(x.shape[0], -1).reshape(x.shape[0], 1, self.n, self.n) * 1.0

    y = torch.randn(2, 1, size, size)
    shapes = {"y": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic_batch else None
    torch.export.save(torch.export.export(Linear().eval(), (y,), dynamic_shapes=shapes), str(path))


def test_an_archive_at_the_wrong_image_size_is_told_about_size_not_batch(tmp_path):
    _export(tmp_path / "small.pt2", 8, dynamic_batch=True)
    entry = ('[[networks]]\nname = "x"\nfactory = "archive:small.pt2"\n'
             'physics = { kind = "denoise", size = 16, sigma = 0.1 }\n\n')
    message = _probe_error(tmp_path, entry)
    assert "`size`" in message and "size = 16" in message and "dynamic batch" not in message
    _export(tmp_path / "fixed.pt2", 16, dynamic_batch=False)
    entry = ('[[networks]]\nname = "x"\nfactory = "archive:fixed.pt2"\n'
             'physics = { kind = "denoise", size = 16, sigma = 0.1 }\n\n')
    assert "dynamic batch" in _probe_error(tmp_path, entry)


# -- damaged and partial stores: estimate, report, query ---------------------------------------------------------

def _store(root: Path, gains: list[float], network: str = "a") -> str:
    """A one-table store (attacks) with one unit's rows; returns the fragment."""
    store = Store.open(root)
    rows = [{"image_id": f"i{k}", "gain": g, "dataset": "d", "task": "attack", "unit_id": "u-" + network}
            for k, g in enumerate(gains)]
    frag = store.write_rows("attacks", network, rows)
    store.record_units([{"unit_id": "u-" + network, "status": "ok", "network": network, "task": "attack",
                         "rows": len(rows), "fragments": [frag], "finished_at": 1.0}])
    store.close()
    return frag


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_nan_rows_are_counted_neither_bad_nor_good(tmp_path):
    _store(tmp_path / "s", [math.nan, math.nan, math.nan, 5.0])
    result = runner.invoke(app, ["estimate", "--table", "attacks", "--bad", "gain >= 2", "--store",
                                 str(tmp_path / "s"), "--format", "json"])
    assert result.exit_code == 0, result.output
    import json
    assert {(r["n"], r["k"]) for r in json.loads(result.stdout)} == {(1, 1)}   # NaN rows: neither bad nor good
    result = runner.invoke(app, ["estimate", "--table", "attacks", "--bad", "gain >= 2", "--store", str(tmp_path / "s")])
    assert result.exit_code == 0 and "NaN in gain (3 rows)" in result.stderr
    code, out = _invoke("query", "SELECT count(*) FILTER (WHERE gain >= 2) AS bad FROM attacks",
                        "--store", str(tmp_path / "s"))
    assert code == 0 and " 1 " in out.replace("│", " ")


def test_a_truncated_fragment_is_named_and_nothing_else_is_lost(tmp_path):
    root = tmp_path / "s"
    _store(root, [1.0, 2.0], "a")
    frag = _store(root, [3.0], "b")
    data = (root / frag).read_bytes()
    (root / frag).write_bytes(data[: len(data) // 2])
    code, out = _invoke("query", "SELECT * FROM attacks", "--store", str(root))
    assert code == 2 and frag in _one_line(out) and "cannot be read" in out
    code, out = _invoke("estimate", "--table", "attacks", "--bad", "gain >= 2", "--store", str(root))
    assert code == 2 and frag in _one_line(out)
    report = tmp_path / "r"
    code, out = _invoke("report", "--store", str(root), "--out", str(report))
    assert code == 0, out
    html = (report / "index.html").read_text()
    assert frag in html and "could not" in html.lower()
    # opening the store for writing moves the fragment aside (kept) and its unit runs again; a's rows stay
    store = Store.open(root)
    assert store.quarantined == [frag] and quarantine_name(root / frag).read_bytes() == data[: len(data) // 2]
    assert store.finished_units() == {"u-a"}
    store.close()
    assert pq.read_table(root / "attacks", partitioning="hive").num_rows == 2


def test_a_column_of_another_type_is_named(tmp_path):
    root = tmp_path / "s"
    _store(root, [1.0, 2.0], "a")
    bad = root / "attacks" / "network=b" / "part-other.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(pa.table({"image_id": ["i0"], "gain": ["large"]}), bad)
    code, out = _invoke("query", "SELECT max(gain) FROM attacks", "--store", str(root))
    assert code == 2 and "'gain'" in _one_line(out) and "part-other.parquet" in out


def test_a_ledger_entry_without_rows_runs_again(tmp_path):
    root = tmp_path / "s"
    frag = _store(root, [1.0], "a")
    _store(root, [2.0], "b")
    (root / frag).unlink()
    store = Store(root)
    assert store.finished_units() == {"u-b"} and list(store.missing_rows()) == ["u-a"]


def test_a_table_not_yet_written_gets_one_line_naming_the_tables_present(tmp_path):
    _store(tmp_path / "s", [1.0])
    code, out = _invoke("query", "SELECT * FROM ball", "--store", str(tmp_path / "s"))
    assert code == 2
    line = _one_line(out)
    assert "'ball'" in line and "attacks" in line and "ledger" in line and "Catalog" not in line


def test_read_only_use_of_a_store_needs_no_write_access(tmp_path, monkeypatch):
    root = tmp_path / "s"
    _store(root, [1.0, 3.0])
    (root / ".lock").unlink()

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Store, "_acquire_lock", refuse)   # as on a read-only mount (tests may run as root)
    assert _invoke("query", "SELECT count(*) FROM attacks", "--store", str(root))[0] == 0
    assert _invoke("estimate", "--table", "attacks", "--bad", "gain >= 2", "--store", str(root))[0] == 0
    code, out = _invoke("report", "--store", str(root), "--out", str(tmp_path / "r"))
    assert code == 0, out
    assert not (root / ".lock").exists()


def test_a_run_with_nothing_left_to_do_needs_no_write_access(tmp_path, monkeypatch):
    from survey.engine.scheduler import run_study

    study = load_study(faulty_study(tmp_path, network_entry("net"), ATTACK))
    handle = resolve_network(study.networks[0], study.base_dir)
    units = plan_work(study, {"net": handle}).units
    store = Store.open(tmp_path / "results")
    store.record_units([{"unit_id": u.unit_id, "status": "ok", "fragments": [], "finished_at": 1.0} for u in units])
    store.close()
    (tmp_path / "results" / ".lock").unlink()
    monkeypatch.setattr(Store, "_acquire_lock", lambda self: (_ for _ in ()).throw(OSError(30, "Read-only")))
    summary = run_study(study, store_dir=tmp_path / "results")
    assert summary.skipped == len(units) and summary.done == 0
    monkeypatch.undo()
    store = Store.open(tmp_path / "results")   # with work left, a read-only store is one line
    store.record_units([{"unit_id": units[0].unit_id, "status": "failed", "fragments": [], "finished_at": 2.0}])
    store.close()
    monkeypatch.setattr(Store, "_acquire_lock", lambda self: (_ for _ in ()).throw(OSError(30, "Read-only")))
    code, out = _invoke("run", str(tmp_path / "study.toml"), "--store", str(tmp_path / "results"))
    assert code == 2 and "read-only" in _one_line(out) and "--store" in out


def test_a_file_factory_leaves_no_temporary_files_and_keeps_its_source(tmp_path):
    import glob
    import inspect
    import tempfile

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "survey-*")))
    study = load_study(faulty_study(tmp_path, network_entry("net"), ATTACK))
    net, _ = resolve_network(study.networks[0], study.base_dir).build("cpu")
    assert "def forward" in inspect.getsource(type(net))   # tracebacks and torch.jit.script can read it
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "survey-*"))) - before == set()


def test_tracing_a_network_around_the_mri_operator_gives_no_tracer_warning():
    import warnings

    from survey.physics import make_physics

    physics = make_physics("mri", size=16, ratio=0.5, mask="uniform-lines", seed=0)

    class Wrapped(torch.nn.Module):
        def forward(self, y):
            return physics.H(y).real

    y = physics.A(torch.rand(2, 1, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(Wrapped().eval(), (y,))
    assert torch.allclose(traced(y), physics.H(y).real)


# -- through Ray: one study shared by the checks below -----------------------------------------------------------

RAY_CRITERIA = ('[[criteria]]\nname = "attack"\ntable = "attacks"\nbad = "out_change_rel >= 10"\nmax_upper = 0.99\n')


@pytest.fixture(scope="module")
def ray_study(tmp_path_factory, ray_local):
    """A study of a healthy network, one that turns NaN after the probe and one the sweep skips, run twice
    through `survey run`: (folder, store, first output, second output, exit codes)."""
    folder = tmp_path_factory.mktemp("faults_ray")
    nets = network_entry("good") + network_entry("nan", "nan", after=2) + network_entry("fixed", "fixed")
    path = faulty_study(folder, nets, ATTACK + SWEEP, criteria=RAY_CRITERIA)
    store = folder / "results"
    first = runner.invoke(app, ["run", str(path), "--store", str(store)])
    second = runner.invoke(app, ["run", str(path), "--store", str(store)])
    return folder, store, first, second


def test_survey_run_fails_the_non_finite_units_and_keeps_the_rest(ray_study):
    folder, store, first, second = ray_study
    assert first.exit_code == 1, first.output
    failed = [line for line in first.output.splitlines() if line.startswith("failed ")]
    assert failed and all("network 'nan'" in line and "non-finite" in line for line in failed)
    assert "skipped: network 'fixed', task sweep" in first.output and "fixed sampling" in first.output
    rows = pq.read_table(store / "attacks", partitioning="hive").to_pylist()
    assert {r["network"] for r in rows} == {"good", "fixed"} and all(math.isfinite(r["out_change_rel"]) for r in rows)
    # the rerun retries the failed units (and only those): they fail again, nothing written before is lost
    assert second.exit_code == 1 and "0 already in the store" not in second.output
    assert len(pq.read_table(store / "attacks", partitioning="hive")) == len(rows)
    ledger = pq.read_table(store / "_ledger").to_pylist()
    nan_entries = [e for e in ledger if e["network"] == "nan"]
    assert nan_entries and all(e["status"] == "failed" for e in nan_entries)
    assert len(nan_entries) == 2 * len(failed)


def test_report_estimate_and_query_reach_no_verdict_from_the_failed_network(ray_study, tmp_path):
    folder, store, _, _ = ray_study
    code, out = _invoke("report", "--store", str(store), "--out", str(tmp_path / "r"),
                        "--study", str(folder / "study.toml"))
    assert code == 0, out
    html = (tmp_path / "r" / "index.html").read_text()
    assert "All acceptance criteria are met" not in html   # network nan has no rows: no pass for it
    assert "nan" in html and "non-finite" in html
    assert "fixed sampling" in html and "rows not measured" in html     # the skip, per network and task
    code, out = _invoke("query", "SELECT count(*) AS n FROM attacks WHERE network = 'nan'", "--store", str(store))
    assert code == 0 and " 0 " in out.replace("│", " ")
    result = runner.invoke(app, ["estimate", "--table", "attacks", "--bad", "out_change_rel >= 10", "--by", "network",
                                 "--store", str(store), "--format", "json"])
    import json
    assert result.exit_code == 0 and {r["network"] for r in json.loads(result.stdout)} == {"good", "fixed"}


def test_a_network_that_is_not_deterministic_is_named(tmp_path):
    notes: list[str] = []
    study = load_study(faulty_study(tmp_path, network_entry("noisy", "noisy") + network_entry("calm"), ATTACK))
    checked_networks(study, notes)
    assert len(notes) == 1 and "network 'noisy'" in notes[0] and "not deterministic" in notes[0]
