"""The store: atomic fragments, a ledger written after rows, orphans removed, tensors by hash."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from survey.store import Store, StoreBusy


def test_rows_then_ledger_roundtrip(tmp_path):
    store = Store.open(tmp_path / "s")
    frag = store.write_rows("attacks", "dagan", [{"a": 1, "b": "x"}, {"a": 2, "c": 0.5}])
    assert frag.startswith("attacks/network=dagan/part-")
    store.record_units([{"unit_id": "u1", "status": "ok", "fragments": [frag]}])
    table = pq.read_table(store.root / frag)
    assert table.column("a").to_pylist() == [1, 2]
    assert table.column("c").to_pylist() == [None, 0.5]
    assert store.finished_units() == {"u1"}
    assert store.tables() == ["attacks"]
    # reopening keeps committed fragments
    store.close()
    Store.open(store.root).close()
    assert (store.root / frag).exists()


def test_failed_units_are_not_finished(tmp_path):
    store = Store.open(tmp_path)
    store.record_units([{"unit_id": "u1", "status": "failed", "fragments": [], "error": "boom"}])
    assert store.finished_units() == set()


def test_orphan_fragments_removed_on_open(tmp_path):
    store = Store.open(tmp_path)
    kept = store.write_rows("ball", "n", [{"x": 1}])
    store.record_units([{"unit_id": "u", "status": "ok", "fragments": [kept]}])
    orphan = store.write_rows("ball", "n", [{"x": 2}])   # crash before its ledger row
    (tmp_path / "ball" / "network=n" / ".tmp-part-x.parquet").write_bytes(b"partial")
    store.close()
    Store.open(tmp_path).close()
    assert not (tmp_path / orphan).exists()
    assert (tmp_path / kept).exists()
    assert not list(tmp_path.rglob(".tmp-*"))
    assert Store(tmp_path).remove_orphans() == []  # already removed by open


def test_tensors_saved_with_hash(tmp_path):
    store = Store.open(tmp_path)
    rel, digest = store.write_tensors("unit1", {"r": torch.arange(6.0).reshape(2, 3)})
    data = (tmp_path / rel).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest
    from safetensors.torch import load_file
    assert torch.equal(load_file(str(tmp_path / rel))["r"], torch.arange(6.0).reshape(2, 3))


def test_a_second_writer_is_refused_and_the_first_keeps_its_fragments(tmp_path):
    """Opening removes orphans, so a second `survey run` on a store being written would delete the
    fragments the first has not recorded yet: it is refused instead, naming the store and the pid."""
    first = Store.open(tmp_path)
    in_flight = first.write_rows("ball", "n", [{"x": 1}])   # not in the ledger yet
    with pytest.raises(StoreBusy, match=rf"being written by another survey run \(pid {os.getpid()}\)"):
        Store.open(tmp_path)
    assert (tmp_path / in_flight).exists()
    first.record_units([{"unit_id": "u", "status": "ok", "fragments": [in_flight]}])
    first.close()
    Store.open(tmp_path).close()   # free again once the first writer closes


def test_the_lock_of_a_killed_writer_is_released(tmp_path):
    code = ("import sys, time; from survey.store import Store; Store.open(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusy, match=f"pid {child.pid}"):
            Store.open(tmp_path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    Store.open(tmp_path).close()


def _units(tmp_path):
    """u1 and u2 share one fragment, u3 has its own; each unit kept a tensor file."""
    store = Store.open(tmp_path)
    shared = store.write_rows("sweeps", "n", [{"unit_id": "u1", "v": 1}, {"unit_id": "u2", "v": 2},
                                               {"unit_id": "u1", "v": 3}])
    alone = store.write_rows("sweeps", "n", [{"unit_id": "u3", "v": 4}])
    for unit in ("u1", "u2", "u3"):
        store.write_tensors(unit, {"out": torch.zeros(2)})
    common = {"status": "ok", "network": "n", "task": "sweep", "dataset": "ellipses"}
    store.record_units([{"unit_id": "u1", **common, "fragments": [shared], "finished_at": 1.0, "rows": 2},
                        {"unit_id": "u2", **common, "fragments": [shared], "finished_at": 1.0, "rows": 1},
                        {"unit_id": "u3", **common, "fragments": [alone], "finished_at": 2.0, "rows": 1}])
    return store, shared, alone


def _rows_on_disk(root):
    return sorted((r["unit_id"], r["v"]) for f in (root / "sweeps").rglob("part-*.parquet")
                  for r in pq.read_table(f).to_pylist())


def test_forget_retracts_rows_and_tensors_and_the_units_are_pending_again(tmp_path):
    store, shared, alone = _units(tmp_path)
    assert store.forget(["u1", "absent"], reason="sweep reference fixed") == 1
    assert store.finished_units() == {"u2", "u3"}
    assert _rows_on_disk(tmp_path) == [("u2", 2), ("u3", 4)]   # u1's rows left the shared fragment
    assert not (tmp_path / shared).exists() and (tmp_path / alone).exists()
    assert not (tmp_path / "tensors" / "u1.safetensors").exists()
    assert (tmp_path / "tensors" / "u2.safetensors").exists()
    latest = store.latest_entries()
    assert latest["u1"]["status"] == "forgotten" and latest["u1"]["error"] == "sweep reference fixed"
    assert latest["u2"]["fragments"] != [shared] and store.fragment_names() == {*latest["u2"]["fragments"], alone}
    store.close()
    Store.open(tmp_path).close()   # nothing is an orphan: the rewritten fragment is named
    assert _rows_on_disk(tmp_path) == [("u2", 2), ("u3", 4)]
    # a rerun's new ok entry supersedes the forgotten one
    again = Store.open(tmp_path)
    again.record_units([{"unit_id": "u1", "status": "ok", "fragments": [], "finished_at": time.time() + 1}])
    assert again.finished_units() == {"u1", "u2", "u3"}
    again.close()


def test_a_crash_inside_forget_leaves_a_consistent_store(tmp_path, monkeypatch):
    """Killed after the ledger write but before the old fragment is deleted: the next writer's open removes
    it as an orphan, so no row is seen twice."""
    store, shared, _ = _units(tmp_path)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        store.forget(["u1"], reason="test")
    monkeypatch.undo()
    assert (tmp_path / shared).exists()          # the old fragment is still there ...
    store.close()
    Store.open(tmp_path).close()
    assert _rows_on_disk(tmp_path) == [("u2", 2), ("u3", 4)]   # ... until the next open removes it


def test_cli_forget_lists_then_forgets(tmp_path):
    from typer.testing import CliRunner

    from survey.cli import app
    from tests.conftest import write_study

    store, _, _ = _units(tmp_path / "results")
    store.close()
    study = write_study(tmp_path, 'name = "s"\nstore = "results"\n[[networks]]\nname = "dagan"\n'
                                  '[[datasets]]\nname = "ellipses"\n[[tasks]]\nname = "sweep"\n')
    runner = CliRunner()
    result = runner.invoke(app, ["forget", str(study), "--store", str(tmp_path / "results"), "--reason", "r"])
    assert result.exit_code == 2 and "--network, --task and/or --dataset" in result.stderr
    result = runner.invoke(app, ["forget", str(study), "--store", str(tmp_path / "results"), "--reason", "r",
                                 "--task", "sweep"])
    assert result.exit_code == 0 and "3 finished units (4 rows) match; pass --yes" in result.output
    assert Store(tmp_path / "results").finished_units() == {"u1", "u2", "u3"}   # a dry run changes nothing
    result = runner.invoke(app, ["forget", str(study), "--store", str(tmp_path / "results"), "--reason", "r",
                                 "--task", "sweep", "--network", "n", "--yes"])
    assert result.exit_code == 0 and "forgot 3 units" in result.output
    assert Store(tmp_path / "results").finished_units() == set()
    assert _rows_on_disk(tmp_path / "results") == []


def test_every_table_reads_as_a_plain_parquet_dataset_in_pandas_polars_and_pyarrow(tmp_path):
    """Several fragments per table, a column all None in one fragment and float in another, a column that
    appears only later, the ledger's error and fragments: one schema per directory, `network` from the path."""
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as pads

    from survey.layout import MEANING_KEY, UNIT_KEY

    store = Store.open(tmp_path)
    meaning = {"ref_psnr": ("PSNR of the reference", "dB")}
    frags = [store.write_rows("attacks", "dagan", [{"network": "dagan", "unit_id": "u1", "ref_psnr": None,
                                                      "k": 1}], meaning),
             store.write_rows("attacks", "unet", [{"network": "unet", "unit_id": "u2", "ref_psnr": 31.5, "k": 2,
                                                     "late": "x"}], meaning),
             store.write_rows("attacks", "dagan", [{"network": "dagan", "unit_id": "u3", "ref_psnr": None,
                                                      "k": 2.5}], meaning)]
    store.record_units([{"unit_id": "u1", "status": "ok", "fragments": frags[:1], "error": None}])
    store.record_units([{"unit_id": "u4", "status": "failed", "fragments": [], "error": "boom"}])
    store.write_run({"run_id": "r1", "notes": None})
    store.write_run({"run_id": "r2", "notes": "skipped 1 file"})
    store.close()

    for rel in frags:
        assert "network" not in pq.read_schema(tmp_path / rel).names   # the directory holds it
    frame = pd.read_parquet(tmp_path / "attacks").sort_values("unit_id")
    assert list(frame["network"].astype(str)) == ["dagan", "unet", "dagan"]
    assert frame["ref_psnr"].isna().tolist() == [True, False, True] and frame["k"].tolist() == [1.0, 2.0, 2.5]
    assert frame["late"].isna().tolist() == [True, False, True] and frame["late"].iloc[1] == "x"
    polars = pl.read_parquet(str(tmp_path / "attacks" / "**" / "*.parquet"), hive_partitioning=True)
    assert sorted(polars["network"].to_list()) == ["dagan", "dagan", "unet"]
    assert polars.schema["ref_psnr"] == pl.Float64
    assert pads.dataset(tmp_path / "attacks", partitioning="hive").to_table().num_rows == 3
    for table in ("_ledger", "runs"):
        assert len(pd.read_parquet(tmp_path / table)) == 2
        assert len(pl.read_parquet(str(tmp_path / table / "*.parquet"))) == 2
    field = pq.read_schema(tmp_path / frags[0]).field("ref_psnr")
    assert field.metadata == {MEANING_KEY: b"PSNR of the reference", UNIT_KEY: b"dB"}


def test_a_store_written_before_reads_in_duckdb_and_is_unified_when_its_table_is_written(tmp_path):
    """Old fragments keep `network` in the file and may disagree in type: DuckDB reads them as before,
    and the first write to the table brings them to the one schema (same rows, same ledger names)."""
    import uuid

    import pandas as pd
    import pyarrow as pa

    from survey.analysis.db import query

    old = []
    for network, psnr in (("dagan", [None, None]), ("unet", [30.0, 20.0])):
        rel = f"attacks/network={network}/part-{uuid.uuid4().hex}.parquet"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"network": [network] * 2, "unit_id": [f"u-{network}"] * 2, "psnr": psnr}),
                       tmp_path / rel)
        old.append(rel)
    Store(tmp_path).record_units([{"unit_id": f"u-{n}", "status": "ok", "fragments": [r]}
                                  for n, r in zip(("dagan", "unet"), old)])
    sql = "SELECT network, count(*) AS n, avg(psnr) AS p FROM attacks GROUP BY network ORDER BY network"
    before = query(tmp_path, sql)
    assert before["n"].tolist() == [2, 2] and before["p"].tolist()[1] == 25.0
    store = Store.open(tmp_path)
    new = store.write_rows("attacks", "dagan", [{"unit_id": "u-new", "psnr": 10.0}])
    store.record_units([{"unit_id": "u-new", "status": "ok", "fragments": [new]}])
    store.close()
    assert all((tmp_path / rel).exists() for rel in old) and store.fragment_names() == {*old, new}
    after = query(tmp_path, sql)
    assert after["n"].tolist() == [3, 2] and after["p"].tolist() == [10.0, 25.0]
    frame = pd.read_parquet(tmp_path / "attacks")
    assert len(frame) == 5 and frame["psnr"].notna().sum() == 3
