"""The store: atomic fragments, a ledger written after rows, orphans removed, tensors by hash."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys

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
