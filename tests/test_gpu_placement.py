"""Actor placement on GPUs, checked on CPU: a loopback Ray cluster told it has 2 GPUs (a custom resource
count, no device behind it), the engine's ActorPool with a stand-in worker that reports where Ray put it.

Runs in a subprocess so its cluster (with GPUs) does not replace the session's shared one (no GPUs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, os
import ray
from survey.engine import dispatch
from survey.engine.cluster import connect
from survey.spec import EngineSpec


class StandIn:
    """Records what the pool hands a worker; reports the GPU Ray assigned (no network is built)."""

    def __init__(self, handle, device, threads, batches=None):
        self.device, self.threads = device, threads

    def describe(self):
        return {"device": self.device, "threads": self.threads, "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


dispatch.SurveyWorker = StandIn
assert connect(num_cpus=2, num_gpus=2)
try:
    out = {"cluster_gpus": ray.cluster_resources().get("GPU", 0.0)}
    auto = EngineSpec(actors_per_network=2, device="auto")
    out["share_auto"] = dispatch.gpu_share(auto)
    out["share_cpu"] = dispatch.gpu_share(EngineSpec(actors_per_network=2, device="cpu"))
    out["share_given"] = dispatch.gpu_share(EngineSpec(actors_per_network=2, gpus_per_actor=0.25))
    pool = dispatch.ActorPool(auto, {"a": None, "b": None}, ["a", "b"])
    out["options"] = pool.options
    out["workers"] = [w for actors in pool.actors.values() for w in ray.get([a.describe.remote() for a in actors])]
    for actors in pool.actors.values():  # free their CPU shares for the next pool
        for actor in actors:
            ray.kill(actor)
    cpu_pool = dispatch.ActorPool(EngineSpec(actors_per_network=1, device="cpu"), {"c": None}, ["c"])
    out["cpu_workers"] = ray.get([a.describe.remote() for a in cpu_pool.actors["c"]])
    print("RESULT " + json.dumps(out))
finally:
    ray.shutdown()
'''


@pytest.mark.slow
def test_actors_share_the_fake_gpus_and_are_told_to_use_cuda():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:  # Ray's own processes are in the script's session: leave none behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, stdout[-2000:] + stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["cluster_gpus"] == 2.0
    # device auto on a cluster with GPUs: each actor gets an even share of one GPU and runs on cuda
    assert out["share_auto"] == 0.5 and out["options"]["num_gpus"] == 0.5
    assert out["share_cpu"] == 0.0 and out["share_given"] == 0.25
    workers = out["workers"]
    assert len(workers) == 4 and all(w["device"] == "cuda" for w in workers)
    # four half-GPU actors on two GPUs: Ray must put exactly two on each, and tell each which one it has
    assert all(len(w["gpu_ids"]) == 1 and w["visible"] == w["gpu_ids"][0] for w in workers)
    assert sorted(Counter(w["gpu_ids"][0] for w in workers).values()) == [2, 2]
    # a study that asks for the CPU gets no GPU share and no GPU, whatever the cluster has
    assert [w["device"] for w in out["cpu_workers"]] == ["cpu"] and out["cpu_workers"][0]["gpu_ids"] == []
