"""A multi-node Ray cluster simulated on loopback: the survey spreads over nodes and survives losing one."""

from __future__ import annotations

import threading
import time

import pyarrow.parquet as pq
import pytest
import yaml

from survey.engine.scheduler import run_study
from survey.spec import load_study
from survey.store import Store
from tests.conftest import write_study

STUDY = """
name = "multi"
seed = 11

[[networks]]
name = "tiny"
factory = "tiny_net.py:build"
physics = { kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }

[[datasets]]
name = "ellipses"
count = 16

[[tasks]]
name = "attack"
images_per_unit = 1
params = { iterations = 300, eta = 0.01, tau = 0.001, snapshot_levels = [100.0] }

[engine]
actors_per_network = 2
max_in_flight = 1
retries = 3
cpus_per_actor = 1
flush_seconds = 0.2
"""


def test_cluster_yaml_is_valid():
    from pathlib import Path
    config = yaml.safe_load((Path(__file__).parents[1] / "cluster.yaml").read_text())
    assert config["head_node_type"] in config["available_node_types"]
    assert any("pip install" in c and "-e" in c for c in config["setup_commands"])


@pytest.mark.slow
def test_node_removed_mid_survey_loses_and_duplicates_nothing(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.2", "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.3")
    ray.init(address=cluster.address, _node_ip_address="127.0.0.2", log_to_driver=False)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        path = write_study(tmp_path, STUDY)
        store_dir = tmp_path / "results"

        done_at_removal = []

        def remove_worker_when_started():
            deadline = time.time() + 120
            while time.time() < deadline and not list((store_dir / "_ledger").glob("*.parquet")):
                time.sleep(0.2)
            done_at_removal.append(len(Store(store_dir).finished_units()))
            cluster.remove_node(worker)

        killer = threading.Thread(target=remove_worker_when_started, daemon=True)
        killer.start()
        summary = run_study(load_study(path), store_dir=store_dir)
        killer.join()
        assert done_at_removal and done_at_removal[0] < 16, "the node went after the survey ended"
        assert summary.failed == 0 and summary.done == 16
        ledger = [e for e in Store(store_dir).ledger().to_pylist() if e["status"] == "ok"]
        assert len(ledger) == len({e["unit_id"] for e in ledger}) == 16
        rows = [r for f in (store_dir / "attacks").rglob("*.parquet") for r in pq.read_table(f).to_pylist()]
        assert len(rows) == 16 and len({r["unit_id"] for r in rows}) == 16
    finally:
        ray.shutdown()
        cluster.shutdown()
