"""Bring-your-own networks: factories from files or modules, weights, archives, and clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from survey.nets.byo import NetworkLoadError, build_network, check_network, resolve_factory
from survey.physics import make_physics
from tests.conftest import TINY_NET

PHYSICS = make_physics("mri", size=16, ratio=0.5, mask="uniform-lines", seed=0)


def _file_net(tmp_path, source=TINY_NET, name="net.py"):
    (tmp_path / name).write_text(source)
    return name


def test_file_factory_builds_checks_and_travels_as_source(tmp_path):
    _file_net(tmp_path)
    src = resolve_factory("mine", "net.py:build", tmp_path)
    assert src.kind == "file" and b"TinyNet" in src.source
    (tmp_path / "net.py").unlink()  # a remote worker has no copy of the file
    net = build_network(src)
    check_network("mine", net, PHYSICS)
    y = PHYSICS.A(torch.rand(3, 1, 16, 16))
    assert net(y, PHYSICS).shape == (3, 1, 16, 16)


def test_module_factory(tmp_path):
    src = resolve_factory("u", "survey.nets.unet:UNet", tmp_path, kwargs={"width": 4, "depth": 1})
    net = build_network(src)
    check_network("u", net, PHYSICS)


def test_weights_safetensors_and_state_dict(tmp_path):
    _file_net(tmp_path)
    reference = build_network(resolve_factory("m", "net.py:build", tmp_path))
    state = {k: torch.full_like(v, 0.5) for k, v in reference.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    for weights in ("w.safetensors", "w.pt"):
        net = build_network(resolve_factory("m", "net.py:build", tmp_path, weights=weights))
        assert all(torch.all(p == 0.5) for p in net.state_dict().values())


def test_torchscript_and_export_archives(tmp_path):
    class Plain(torch.nn.Module):
        def forward(self, y):
            return torch.fft.ifft2(y, norm="ortho").real

    y = PHYSICS.A(torch.rand(2, 1, 16, 16))
    torch.jit.script(Plain()).save(str(tmp_path / "m.pt"))
    torch.export.save(torch.export.export(Plain(), (y,)), str(tmp_path / "m.pt2"))
    for archive in ("m.pt", "m.pt2"):
        net = build_network(resolve_factory("a", f"archive:{archive}", tmp_path))
        out = net(y, PHYSICS)
        assert torch.allclose(out, Plain()(y), atol=1e-6)


BAD_SIGNATURE = TINY_NET.replace("def forward(self, y, physics):", "def forward(self, y, physics, extra):")
WRONG_SHAPE = TINY_NET.replace("return h + 0.1 * self.body(h)", "return (h + 0.1 * self.body(h))[..., :8]")
NAN_OUT = TINY_NET.replace("return h + 0.1 * self.body(h)", "return h * float('nan')")
NOT_MODULE = TINY_NET.replace("return TinyNet(fail_batch, crash_batch)", "return lambda y, physics: y")


@pytest.mark.parametrize("factory, source, message", [
    ("no_such_module_xyz:build", None, "module 'no_such_module_xyz' not found"),
    ("net.py:nope", TINY_NET, "has no callable 'nope'"),
    ("absent.py:build", None, "factory file"),
    ("net.py", TINY_NET, "must look like"),
    ("net.py:build", BAD_SIGNATURE, "net(y, physics)"),
    ("net.py:build", WRONG_SHAPE, "output shape (2, 1, 16, 8)"),
    ("net.py:build", NAN_OUT, "NaN or Inf"),
    ("net.py:build", NOT_MODULE, "not a torch.nn.Module"),
    ("net.py:build", "raise ImportError('broken import')", "importing net.py failed"),
])
def test_clear_errors(tmp_path, factory, source, message):
    assert source != TINY_NET or message in ("has no callable 'nope'", "must look like")  # each case is broken
    if source is not None:
        _file_net(tmp_path, source)
    with pytest.raises(NetworkLoadError) as err:
        net = build_network(resolve_factory("mine", factory, tmp_path))
        check_network("mine", net, PHYSICS)
    assert message in str(err.value)
    assert "'mine'" in str(err.value)


def test_weights_that_do_not_match(tmp_path):
    _file_net(tmp_path)
    save_file({"body.0.weight": torch.zeros(3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(NetworkLoadError, match="do not match the network"):
        build_network(resolve_factory("mine", "net.py:build", tmp_path, weights="bad.safetensors"))
    with pytest.raises(NetworkLoadError, match="not found"):
        resolve_factory("mine", "net.py:build", tmp_path, weights="absent.safetensors")


def test_byo_network_next_to_a_study_evaluates_like_a_zoo_network(tmp_path):
    from typer.testing import CliRunner

    from survey.cli import app
    from tests.conftest import write_study

    study = write_study(tmp_path, """
        name = "byo"
        [[networks]]
        name = "mine"
        factory = "tiny_net.py:build"
        physics = { kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }
        [[datasets]]
        name = "ellipses"
        count = 3
        [[tasks]]
        name = "sweep"
        """)
    result = CliRunner().invoke(app, ["zoo", "eval", "mine", "--study", str(study), "--count", "3"])
    assert result.exit_code == 0, result.output
    assert "mine on ellipses/test (3 images)" in result.output
    assert "reference" in result.output
