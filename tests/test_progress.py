"""Progress of a run per network: units done, rows/s and an ETA from the measured unit times (exact on a
known clock), and what `survey run` prints per network at tiny size."""

from types import SimpleNamespace

from typer.testing import CliRunner

from survey.cli import app
from survey.engine.progress import RunProgress, eta_text, network_line
from tests.conftest import tiny_study, write_study


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _units(**per_network):
    return [SimpleNamespace(network=name) for name, count in per_network.items() for _ in range(count)]


def test_eta_is_units_left_times_measured_seconds_per_unit_over_actors():
    clock = Clock()
    progress = RunProgress(_units(a=10, b=4), actors_per_network=2, clock=clock)
    first = progress.snapshot()
    assert first["total"] == 14 and first["done"] == 0 and first["eta_s"] is None   # nothing measured yet
    assert first["networks"]["a"]["eta_s"] is None
    progress.record("a", rows=5, seconds=2.0)
    progress.record("a", rows=5, seconds=4.0)
    progress.record("b", rows=3, seconds=1.0)
    progress.record("b", rows=0, seconds=9.0, ok=False)   # a failed unit counts as finished, not in the mean
    clock.now = 110.0
    snap = progress.snapshot()
    a, b = snap["networks"]["a"], snap["networks"]["b"]
    assert (a["done"], a["rows"], a["seconds_per_unit"]) == (2, 10, 3.0)
    assert a["eta_s"] == 8 * 3.0 / 2                        # 8 units left, 3 s each, 2 actors
    assert a["rows_per_s"] == 10 / 10.0
    assert (b["done"], b["failed"], b["seconds_per_unit"], b["eta_s"]) == (1, 1, 1.0, 2 * 1.0 / 2)
    assert snap["done"] == 4 and snap["failed"] == 1 and snap["rows"] == 13
    assert snap["eta_s"] == 12.0                            # the slowest network sets the run's ETA
    for _ in range(8):
        progress.record("a", rows=1, seconds=1.0)
    assert progress.network("a")["eta_s"] == 0.0            # nothing left: done


def test_eta_text_and_line():
    assert [eta_text(s) for s in (None, 42, 300, 9000)] == ["-", "42 s", "5.0 min", "2.5 h"]
    line = network_line("unet", {"done": 3, "total": 8, "rows": 120, "failed": 0, "rows_per_s": 45.0,
                                 "seconds_per_unit": 1.2, "eta_s": 6.0})
    assert line == "unet: 3/8 units, 120 rows, 45.0 rows/s, 1.20 s per unit, ETA 6 s"


TASKS = """
[[tasks]]
name = "attack"
images_per_unit = 1
params = { iterations = 2, lam = 0.01, eta = 0.05, tau = 0.001, snapshot_levels = [0.01], with_reference = false }
"""


def test_survey_run_prints_units_rows_per_s_and_eta_per_network(tmp_path, ray_local):
    body = tiny_study("progress-test", TASKS, count=3)
    second = body[body.index("[[networks]]"):body.index("[[datasets]]")].replace('name = "tiny"', 'name = "tiny2"')
    path = write_study(tmp_path, body.replace("[[datasets]]", second + "[[datasets]]"))
    result = CliRunner().invoke(app, ["run", str(path), "--store", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ("tiny", "tiny2"):
        (line,) = [line for line in lines if line.startswith(f"{name}: ")]
        assert line.startswith(f"{name}: 3/3 units, 3 rows, ") and " rows/s, " in line and "ETA 0 s" in line
        assert " s per unit" in line and "- s per unit" not in line
    # not a terminal: plain lines as the run goes (the first report, then every 30 s, the last), no bars
    plain = [line for line in lines if line.startswith("progress-test progress: ")]
    assert len(plain) >= 2 and int(plain[0].split(": ")[1].split("/")[0]) < 6
    assert plain[-1].startswith("progress-test progress: 6/6 units, 6 rows, 0 failed, ETA ")
    assert not any("━" in line for line in lines)
