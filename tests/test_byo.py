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


class _Conv(torch.nn.Module):
    """An archive-style network: measurements in, image out (a convolution on Re ifft2(y))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, y):
        return self.drop(self.conv(torch.fft.ifft2(y, norm="ortho").real))


def test_archives_survive_eval_train_and_the_two_batch_probe(tmp_path):
    y = PHYSICS.A(torch.rand(2, 1, 16, 16))
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(_Conv().eval(), (y,), dynamic_shapes={"y": {0: batch}}),
                      str(tmp_path / "dyn.pt2"))
    torch.jit.trace(_Conv().eval(), (y,)).save(str(tmp_path / "traced.pt"))
    for archive in ("dyn.pt2", "traced.pt"):
        net = build_network(resolve_factory("a", f"archive:{archive}", tmp_path))
        net.train()
        net.eval()  # what every task does: must not reach the exported program
        check_network("a", net, PHYSICS)
        y3 = PHYSICS.A(torch.rand(3, 1, 16, 16)).requires_grad_(True)
        net(y3, PHYSICS).square().sum().backward()  # attacks differentiate through it
        assert y3.grad is not None and torch.allclose(net(y3, PHYSICS), _Conv().eval()(y3), atol=1e-5)


def test_archive_exported_at_one_batch_size_fails_the_probe_with_how_to_export(tmp_path):
    y = PHYSICS.A(torch.rand(2, 1, 16, 16))
    torch.export.save(torch.export.export(_Conv().eval(), (y,)), str(tmp_path / "fixed.pt2"))
    net = build_network(resolve_factory("fixed", "archive:fixed.pt2", tmp_path))
    with pytest.raises(NetworkLoadError) as err:
        check_network("fixed", net, PHYSICS)
    message = str(err.value)
    assert "\n" not in message and "batch of 1" in message
    assert "dynamic_shapes" in message and "torch.export.Dim" in message


def test_checkpoint_state_dict_key_and_module_prefix_are_unwrapped_with_a_note(tmp_path):
    from survey.nets.byo import weights_notes

    _file_net(tmp_path)
    reference = build_network(resolve_factory("m", "net.py:build", tmp_path))
    state = {f"module.{k}": torch.full_like(v, 0.25) for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pt")
    src = resolve_factory("m", "net.py:build", tmp_path, weights="ckpt.pt")
    net = build_network(src)
    assert all(torch.all(p == 0.25) for p in net.state_dict().values())
    notes = weights_notes(src)
    assert len(notes) == 2 and "'state_dict'" in notes[0] and "epoch" in notes[0] and "module." in notes[1]
    plain = resolve_factory("m", "net.py:build", tmp_path, weights=None)
    assert weights_notes(plain) == []
