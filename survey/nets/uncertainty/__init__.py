"""Uncertainty companions of zoo networks: INN, MC dropout, ProbOut (Oala et al.'s three detectors).

A companion is trained post hoc around a frozen network and stored like the zoo's weights:
weights/<net>-<method>.safetensors with a card weights/<net>-<method>.json (its recipe, the base
network's weights hash, test metrics, its own hash). `build_companion(method, net, **params)` makes an
untrained one; `load_companion(name, net)` a trained one; `load_companions(net_name, net)` every
trained companion of a zoo network by the naming convention, method -> companion.
"""

from __future__ import annotations

import torch
from torch import nn

from survey.nets.uncertainty.base import Companion
from survey.nets.uncertainty.inn import IntervalNet
from survey.nets.uncertainty.mcdropout import MCDropoutNet
from survey.nets.uncertainty.probout import ProbOutNet

#: method name -> companion class.
METHODS: dict[str, type[Companion]] = {"inn": IntervalNet, "mcdropout": MCDropoutNet, "probout": ProbOutNet}


def build_companion(method: str, net: nn.Module, **params) -> Companion:
    """An untrained companion `method` around the frozen `net` (ValueError naming the methods otherwise)."""
    if method not in METHODS:
        raise ValueError(f"unknown uncertainty method {method!r}; choose one of {list(METHODS)}")
    return METHODS[method](net, **params)


def load_companion(name: str, net: nn.Module, device: str | torch.device = "cpu") -> Companion:
    """Trained zoo companion `name` (e.g. "dncnn-inn") around `net`, in eval mode on `device`.

    Checks the companion's weights hash against its card and the card's base-network hash against the
    base network's card, so a retrained base network cannot silently run with stale companions.
    """
    from safetensors.torch import load_file

    from survey.nets.zoo import companion_entry, file_sha256, load_card, weights_path

    e = companion_entry(name)
    path = weights_path(name)
    if not path.exists():
        raise FileNotFoundError(f"companion {name!r} has no weights at {path}; run `survey zoo train {name}`")
    card = load_card(name) or {}
    digest = file_sha256(path)
    if card.get("weights_sha256") not in (None, digest):
        raise ValueError(f"weights {path} have sha256 {digest[:12]}..., the card says "
                         f"{card['weights_sha256'][:12]}...: retrain with `survey zoo train {name}`")
    base_hash = (load_card(e.base) or {}).get("weights_sha256")
    if card.get("base_weights_sha256") not in (None, base_hash):
        raise ValueError(f"companion {name!r} was trained on {e.base} weights {card['base_weights_sha256'][:12]}..., "
                         f"the zoo holds {str(base_hash)[:12]}...: retrain with `survey zoo train {name}`")
    companion = build_companion(e.method, net, **e.params)
    companion.load_companion_state(load_file(str(path), device="cpu"))
    companion = companion.to(device).eval()
    for p in companion.parameters():
        p.requires_grad_(False)
    return companion


def load_companions(net_name: str, net: nn.Module, device: str | torch.device = "cpu") -> dict[str, Companion]:
    """method -> trained companion, for every `<net_name>-<method>` whose weights exist (may be empty)."""
    from survey.nets.zoo import companion_names, is_trained

    return {name.rsplit("-", 1)[1]: load_companion(name, net, device)
            for name in companion_names(net_name) if is_trained(name)}


__all__ = ["METHODS", "Companion", "IntervalNet", "MCDropoutNet", "ProbOutNet", "build_companion",
           "load_companion", "load_companions"]
