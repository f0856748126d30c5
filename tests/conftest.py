"""Shared fixtures: one embedded Ray cluster on loopback for the whole session, tiny study files."""

from __future__ import annotations

import textwrap
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.cpu_clock import pytest_addoption, pytest_runtest_protocol  # noqa: F401 - `--cpu-clock FILE`

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


def tiny_study(name: str, tasks: str, *, count: int = 2, header: str = 'store = "results"') -> str:
    """Study text: TinyNet (written by `write_study`) on 16 x 16 Cartesian MRI at 50%, `count` ellipse
    phantoms of the test split, then `tasks` (the [[tasks]] and any further tables, as TOML)."""
    return (f'name = "{name}"\n{header}\n\n[[networks]]\nname = "tiny"\nfactory = "tiny_net.py:build"\n'
            'physics = { kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }\n\n'
            f'[[datasets]]\nname = "ellipses"\nsplit = "test"\ncount = {count}\n\n{textwrap.dedent(tasks).strip()}\n')


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

    for attempt in range(3):   # Ray waits a fixed 30 s for its raylet: a loaded machine (xdist) can miss that
        try:
            started = connect(num_cpus=2)
            break
        except Exception as err:  # noqa: BLE001 - ray raises a bare Exception for this
            if "timed out during startup" not in str(err) or attempt == 2:
                raise
            ray.shutdown()
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


#: Modules that run first, longest first: under pytest-xdist (`make test`, `-n auto --dist loadgroup`) a worker
#: starts the demo (a whole study on its own Ray cluster) at once while the others take everything else.
FIRST = ("tests/test_demo.py",)

#: Fixtures whose users share one xdist group (one worker), so that a session-scoped study runs once.
SHARED_FIXTURES = ("study_store",)


@pytest.hookimpl(tryfirst=True)   # before xdist reads the groups (it appends "@group" to each node id)
def pytest_collection_modifyitems(config, items):
    """Tiers: every test on a Ray cluster (the `ray_local` fixture, directly or through a store fixture) is
    slow, so `make test-fast` (-m "not slow") keeps to unit and property tests; `make test` runs all.

    Under pytest-xdist with `--dist loadgroup` each test module is one group (its module-scoped fixtures
    are built once, on one worker), the users of a shared session fixture one group, and the longest
    modules come first."""
    slow = pytest.mark.slow
    group: dict[str, str] = {}   # module path -> xdist group
    for item in items:
        module = item.nodeid.split("::")[0]
        fixtures = getattr(item, "fixturenames", ())
        if "ray_local" in fixtures:
            item.add_marker(slow)
        shared = [name for name in SHARED_FIXTURES if name in fixtures]
        if shared or module not in group:
            group[module] = shared[0] if shared else module
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group[item.nodeid.split("::")[0]]))
    rank = {path: i for i, path in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(FIRST)))   # stable: order kept otherwise


# -- the evidence report: a small real store, HTML parsing, headless Chromium ------------------------------

#: A study of two tiny networks on MRI running every paper test (tests/test_report.py and others).
REPORT_STUDY = """
name = "report-test"
seed = 5
store = "results"
description = "Two small residual CNNs on Cartesian MRI."
intended_use = "Reconstruction of 32 x 32 MRI slices from undersampled Cartesian k-space (test fixture)."

[[networks]]
name = "tiny-a"
factory = "tiny_net.py:build"
physics = { kind = "mri", size = 32, ratio = 0.5, mask = "uniform-lines", seed = 0 }

[[networks]]
name = "tiny-b"
factory = "tiny_net.py:build"
# another size: one image id at two sizes in one store
physics = { kind = "mri", size = 16, ratio = 0.3, mask = "gaussian-lines", seed = 0 }

[[datasets]]
name = "ellipses"
split = "test"
count = 4

[[tasks]]
name = "attack"
images_per_unit = 4
params = { iterations = 40, lam = 0.01, eta = 0.05, tau = 0.001, snapshot_levels = [0.01, 0.03] }

[[tasks]]
name = "attack"
images_per_unit = 4
params = { search = "budget", budgets = [0.02], iterations = 4, restarts = 1, singular_start = false, matched = ["reference", "H"], reference_tolerance = 1e-4 }

[[tasks]]
name = "ball"
images_per_unit = 4
params = { level = 0.02, radius = [0.25, 1.0], draws = 10, batch = 80, attack = { iterations = 40, eta = 0.05 } }

[[tasks]]
name = "insertion"
images_per_unit = 4
params = { detail = "heart", size = 10, contrast = 0.4, count = 2 }

[[tasks]]
name = "sweep"
images_per_unit = 4
params = { ratios = [0.2, 0.5, 1.0] }

[[criteria]]
name = "Output moves less than 5% at 1% perturbations"
table = "attacks"
bad = "out_change_rel >= 0.05"
where = "snapshot = 'level' AND snapshot_target = 0.01"
# 4 images: even with no bad image, the image-level bound after Holm over 4 decisions is 1 - 0.0125^(1/4) ~ 0.67
max_upper = 0.95

[[criteria]]
name = "Artefact does not persist"
table = "ball"
bad = "artefact_cos >= 0.5"
max_upper = 0.2
"""

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    """Path of Debian's headless-capable Chromium, or None (the browser tests skip then)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Tables(HTMLParser):
    """Collects the text of every table row (list of cell texts) and every <img> src."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_html(html: str) -> _Tables:
    """The rows (cell texts) and <img> sources of an HTML page."""
    parser = _Tables()
    parser.feed(html)
    return parser


@pytest.fixture(scope="session")
def study_store(tmp_path_factory, ray_local):
    """(study, store) after running the study above on the embedded Ray cluster."""
    from survey.engine.scheduler import run_study
    from survey.spec import load_study

    folder = tmp_path_factory.mktemp("report_study")
    study = load_study(write_study(folder, REPORT_STUDY))
    summary = run_study(study, store_dir=folder / "results")
    assert summary.failed == 0 and summary.done == summary.planned
    return study, folder / "results"
