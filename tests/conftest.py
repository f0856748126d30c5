"""Shared fixtures: one embedded Ray cluster on loopback for the whole session, tiny study files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

TINY_NET = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """A small residual CNN on Re H(y); raises on batches of `fail_batch` images (a faulty network)."""

    def __init__(self, fail_batch: int = 0, crash_batch: int = 0):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 1, 3, padding=1))
        self.fail_batch = fail_batch
        self.crash_batch = crash_batch

    def forward(self, y, physics):
        if self.fail_batch and y.shape[0] == self.fail_batch:
            raise RuntimeError(f"TinyNet refuses batches of {self.fail_batch}")
        if self.crash_batch and y.shape[0] == self.crash_batch:
            import os
            os._exit(1)  # the whole worker process dies, as on a segfault or an OOM kill
        h = physics.H(y)
        h = h.real if torch.is_complex(h) else h
        return h + 0.1 * self.body(h)


def build(fail_batch: int = 0, crash_batch: int = 0):
    return TinyNet(fail_batch, crash_batch)
'''


def write_study(folder: Path, body: str, net_source: str = TINY_NET) -> Path:
    """Write tiny_net.py and study.toml into `folder`; returns the study path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny_net.py").write_text(net_source)
    path = folder / "study.toml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture(scope="session")
def ray_local():
    """An embedded Ray cluster on 127.0.0.2 shared by the engine tests."""
    import ray

    from survey.engine.cluster import connect

    started = connect(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: one thread avoids oversubscribing 2 cores (100x slowdowns under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    """Tiers: every test on a Ray cluster (the `ray_local` fixture, directly or through a store fixture) is
    slow, so `make test-fast` (-m "not slow") keeps to unit and property tests; `make test` runs all."""
    slow = pytest.mark.slow
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(slow)
