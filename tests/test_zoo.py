"""The zoo: every shipped network loads with its hash checked and beats H by >= 2 dB on held-out images."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from survey.data import load_dataset
from survey.nets.train import evaluate
from survey.nets.zoo import ZOO, build_network, build_physics, card_path, is_trained, load_network, weights_path


@pytest.mark.parametrize("name", list(ZOO))
def test_shipped_network_beats_h_by_2db(name):
    if not is_trained(name):
        pytest.skip(f"{name} has no committed weights yet: `survey zoo train {name}` produces them")
    net, physics = load_network(name)
    card = json.loads(card_path(name).read_text())
    assert card["physics"] == physics.describe()
    images = load_dataset(ZOO[name].dataset, split="test", size=physics.size, count=8).images
    m = evaluate(net, physics, images, generator=torch.Generator().manual_seed(1))
    assert m["psnr_net"] >= m["psnr_H"] + 2.0, m
    assert card["test_metrics"]["psnr_net"] >= card["test_metrics"]["psnr_H"] + 2.0


@pytest.mark.parametrize("name", list(ZOO))
def test_every_architecture_builds_and_runs(name):
    physics = build_physics(name)
    net = build_network(name, physics).eval()
    n = physics.size
    y = physics.A(torch.rand(2, 1, n, n))
    with torch.no_grad():
        assert net(y, physics).shape == (2, 1, n, n)


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    trained = [n for n in ZOO if is_trained(n)]
    if not trained:
        pytest.skip("no committed weights yet")
    import survey.nets.zoo as zoo

    name = trained[0]
    (tmp_path / f"{name}.json").write_text(card_path(name).read_text())
    data = bytearray(weights_path(name).read_bytes())
    data[-1] ^= 1
    (tmp_path / f"{name}.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="the card says"):
        load_network(name)


def test_zoo_list_shows_every_network():
    from survey.cli import app

    result = CliRunner().invoke(app, ["zoo", "list"])
    assert result.exit_code == 0, result.output
    for name in ZOO:
        assert name in result.output
    # the trained uncertainty companions per network: dncnn and lactunet have all three, the others none
    rows = {line.strip("│ ").split()[0]: line for line in result.output.splitlines() if line.startswith("│")}
    for name in ("dncnn", "lactunet"):
        assert rows[name].rstrip(" │").endswith("inn, mcdropout, probout"), rows[name]
    assert rows["dagan"].rstrip(" │").endswith("-"), rows["dagan"]
