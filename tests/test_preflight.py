"""Bring-your-own failures and bad task parameters stop `survey run` before any work: exit 2, one line
naming the study, the network or task and the problem, no traceback, no Ray, nothing in the store."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from survey.cli import app
from tests.conftest import TINY_NET, write_study

STUDY = """
name = "byo"
[[networks]]
name = "mine"
factory = "tiny_net.py:build"
{weights}
physics = {{ kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }}
[[datasets]]
name = "ellipses"
count = 2
[[tasks]]
name = "attack"
params = {{ iterations = 2, snapshot_levels = [0.5]{extra} }}
"""

NAN_OUT = TINY_NET.replace("return h + 0.1 * self.body(h)", "return h * float('nan')")


class _CodeInPickle:
    """Unpickling this runs open(path, "w"): creates the file. A weights file must never do that."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the run gets as far as starting or joining Ray."""
    import survey.engine.scheduler as scheduler

    calls = []
    monkeypatch.setattr(scheduler, "connect", lambda *a, **k: calls.append(a) or pytest.fail("Ray was started"))
    return calls


def _state_dict(tmp_path):
    from survey.nets.byo import build_network, resolve_factory

    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "net.py").write_text(TINY_NET)
    return build_network(resolve_factory("m", "net.py:build", tmp_path / "probe")).state_dict()


def _run(tmp_path, weights=None, net_source=TINY_NET, extra=""):
    body = STUDY.format(weights=f'weights = "{weights}"' if weights else "", extra=extra)
    study = write_study(tmp_path, body, net_source)
    result = CliRunner().invoke(app, ["run", str(study), "--store", str(tmp_path / "results")])
    return study, result


def _assert_refused(study, result, tmp_path, *parts):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {study}: ")
    for part in parts:
        assert part in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "results").exists(), "the store was opened"


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt"])
def test_truncated_weights(tmp_path, no_ray, name):
    state = _state_dict(tmp_path)
    if name.endswith(".safetensors"):
        save_file(state, str(tmp_path / name))
    else:
        torch.save(state, tmp_path / name)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    study, result = _run(tmp_path, weights=name)
    _assert_refused(study, result, tmp_path, "network 'mine'", f"weights {name}", "cannot read weights")
    assert no_ray == []


def test_weights_that_are_a_pickle_with_code_are_never_executed(tmp_path, no_ray):
    marker = tmp_path / "pwned"
    torch.save({"body.0.weight": _CodeInPickle(marker)}, tmp_path / "w.pt")
    study, result = _run(tmp_path, weights="w.pt")
    _assert_refused(study, result, tmp_path, "network 'mine'", "weights w.pt", "not executed")
    assert not marker.exists(), "the pickle's code ran"


def test_network_that_returns_nan(tmp_path, no_ray):
    study, result = _run(tmp_path, net_source=NAN_OUT)
    _assert_refused(study, result, tmp_path, "network 'mine'", "factory tiny_net.py:build", "NaN or Inf")


def test_unknown_task_parameter(tmp_path, no_ray):
    study, result = _run(tmp_path, extra=", etaa = [0.1, 0.2]")
    _assert_refused(study, result, tmp_path, "[[tasks]] #1 (attack)", "'etaa'", "eta")


def test_invalid_value_at_one_grid_point_fails_at_load(tmp_path):
    """Every expanded grid point is built at load: one bad value in a list is found before any work."""
    from survey.spec import StudyError, load_study

    study = write_study(tmp_path, STUDY.format(weights="", extra=", iterations = [2, -1]").replace(
        "iterations = 2, ", ""))
    with pytest.raises(StudyError, match=r"\[\[tasks\]\] #1 \(attack\)"):
        load_study(study)


def test_detect_task_on_a_network_without_its_companions(tmp_path, no_ray):
    """A detector study names companions the network does not have: refused before Ray with the command that
    trains them (the first version failed each unit on the workers)."""
    detect = '[[tasks]]\nname = "detect"\nparams = { methods = ["inputnoise", "inn"] }\n'
    study = write_study(tmp_path, STUDY.format(weights="", extra="") + detect)
    result = CliRunner().invoke(app, ["run", str(study), "--store", str(tmp_path / "results")])
    _assert_refused(study, result, tmp_path, "#2 (detect)", "'mine'", "['inn']", "survey zoo train mine-inn")
    assert no_ray == []
